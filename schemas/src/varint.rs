//! Zigzag varints (being written).
