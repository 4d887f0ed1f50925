import os

from hypothesis import settings

# In CI, property tests draw the same examples every run (a red CI must be reproducible);
# locally they explore new examples each run.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")
