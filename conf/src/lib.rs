//! Command line, JSON config replay and defaults
