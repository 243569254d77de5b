"""One post-processing rule per module; the order lives in ../pipeline.py."""
