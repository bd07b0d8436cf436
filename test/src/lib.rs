//! Integration and end-to-end tests against the real binaries
