//! Records inside a RecordBatch v2 (being written).
