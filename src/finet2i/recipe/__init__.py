"""The paper's recipe as data: the weighted taxonomy and the figures the report and the estimates compare with."""
