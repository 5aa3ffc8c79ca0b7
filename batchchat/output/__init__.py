"""The output side, shared by every path: result lines, the writer, the resume index, compaction, the lock."""
