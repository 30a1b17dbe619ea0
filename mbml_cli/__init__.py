"""mbml: Multi-task Batch RL with Metric Learning (Li, Vuong et al., NeurIPS 2020)."""
__version__ = "0.1.0"
