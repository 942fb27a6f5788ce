export { connect, TerminalConnection } from "./connection.js";
export type {
  ConnectOptions,
  ConnectionEvents,
  ErrorInfo,
  ExitInfo,
  Status,
  WebSocketConstructor,
  WebSocketLike,
} from "./connection.js";
