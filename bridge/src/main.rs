//! ptyd-bridge binary.

fn main() {}
