//! The Sluice storage node.
