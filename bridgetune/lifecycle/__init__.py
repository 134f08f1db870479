"""The life of a run and of a served model after training: run directories (rundir), atomic
writes (atomic), failpoints for the fault-injection test (failpoints), evaluation reports
(reports), drift monitoring (monitor, monitor_report) and the feedback store (store).

The homes of what comes next (docs/architecture.md): model versions and aliases (registry),
the review queue beside the feedback store, replay sets and the promotion gate. Their recipes
(retrain, promote) compose these with training in bridgetune.recipes; nothing here trains.
"""
