"""The fault campaign (issue 9): faults injected into the real pipeline, each run judged against
`replay`. Run it with ``python -m tests.campaign`` (``--help``); docs/reliability.md, "Fault campaign",
has the table of the latest figures and what each scenario does.

One module per scenario (crash, freeze, rebalance, outages, slow_db, bad_input, soak), on a shared
harness (:mod:`tests.campaign.harness`: stages, worker fleets, the publisher) and one way of judging a
run (:mod:`tests.campaign.verdict`).
"""
