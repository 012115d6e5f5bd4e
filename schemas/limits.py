"""Size limits on every input that crosses a process boundary."""

MAX_QUERY_CHARS = 2_000
MAX_PATH_CHARS = 1_024
MAX_FILES_PER_LIST = 100
MAX_COMMIT_MESSAGE_CHARS = 20_000
MAX_REPO_NAME_CHARS = 256
MAX_FAILURES_PER_BATCH = 20  # hard ceiling; the configured batch size (default 5) is below it
MAX_TEXT_CHARS = 4_000
MAX_REASONING_CHARS = 60_000
MAX_ITEMS = 50
