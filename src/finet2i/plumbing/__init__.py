"""Helpers shared by stages: reading model answers, images, downloads, embeddings files, perceptual hashes.
They move and parse records; they decide nothing."""
