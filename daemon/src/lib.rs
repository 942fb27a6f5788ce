//! ptyd.
