//! Loom models of watchstore (see run.sh).
