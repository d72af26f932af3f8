"""Tiny random-weight models of the real families, built offline, for the embedded demo and the tests.

Demo output is not a dataset: these models are random (or trained for minutes) and exist to prove that every
stage runs the real architecture through the real loading code.
"""
