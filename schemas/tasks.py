"""The wire contract: stable task names and queues (renaming one orphans queued messages)."""

REASON_EPISODE = "ripmap.reason_episode"
MERGE_INSIGHTS = "ripmap.merge_insights"
DISTILL = "ripmap.distill"

EPISODE_QUEUE = "episodes"
# The reducer and distillation get their own queue and worker, so a backlog of
# episodes never delays merges (Redis queues are FIFO).
MERGE_QUEUE = "merge"

TASK_QUEUES = {REASON_EPISODE: EPISODE_QUEUE, MERGE_INSIGHTS: MERGE_QUEUE, DISTILL: MERGE_QUEUE}
