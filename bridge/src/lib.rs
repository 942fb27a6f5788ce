//! ptyd-bridge: browser terminals over WebSocket, backed by ptyd sessions.
