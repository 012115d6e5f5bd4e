"""The wire contract: stable task names and queues (renaming one orphans queued messages)."""

REASON_EPISODE = "ripmap.reason_episode"
MERGE_INSIGHTS = "ripmap.merge_insights"
DISTILL = "ripmap.distill"
STEP_PARAMS = "ripmap.step_params"
REPORT_EVALUATION = "ripmap.report_evaluation"

EPISODE_QUEUE = "episodes"
# The reducer and distillation get their own queue and worker, so a backlog of
# episodes never delays merges (Redis queues are FIFO).
MERGE_QUEUE = "merge"

# Re-sends batches the broker lost (state.ledger): sent, not merged, and in no queue.
SWEEP_OPEN = "ripmap.sweep_open"

# Enqueues partial push batches that waited long enough and re-sends batches whose pusher
# died (producer.push); on the merge queue, so it never waits behind an episode backlog.
FLUSH_BUFFERS = "ripmap.flush_buffers"

# Drains the reducer's inbox (state.inbox): episodes reasoned and waiting to be merged.
MERGE_PENDING = "ripmap.merge_pending"

# The closed loop: score a version on a registered repository with the reference ranker,
# on its own queue (CPU-bound; never behind episodes, and episodes never behind it), and the
# beat's dispatch of evaluations due (state.evaluations).
EVALUATE_QUEUE = "evaluate"
EVALUATE_VERSION = "ripmap.evaluate_version"
DISPATCH_EVALUATIONS = "ripmap.dispatch_evaluations"

TASK_QUEUES = {
    REASON_EPISODE: EPISODE_QUEUE,
    MERGE_INSIGHTS: MERGE_QUEUE,
    DISTILL: MERGE_QUEUE,
    STEP_PARAMS: MERGE_QUEUE,
    REPORT_EVALUATION: MERGE_QUEUE,
    FLUSH_BUFFERS: MERGE_QUEUE,
    SWEEP_OPEN: MERGE_QUEUE,
    MERGE_PENDING: MERGE_QUEUE,
    EVALUATE_VERSION: EVALUATE_QUEUE,
    DISPATCH_EVALUATIONS: MERGE_QUEUE,
}
