"""regsosek_tools: working with the pipeline from outside.

- sample     deterministic synthetic East Kalimantan rosters and interviews, with expected outcomes
- receiver   the reference programme-side receiver of signed eligibility notifications
- processes  start, crash, restart and stop the services as subprocesses
- run        the whole pipeline on a sample, with a summary (python -m regsosek_tools.run)
"""
