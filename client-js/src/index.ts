export { connect, TerminalConnection } from "./connection.js";
export type {
  ConnectOptions,
  ConnectionEvents,
  ErrorInfo,
  ExitInfo,
  Role,
  Status,
  WebSocketConstructor,
  WebSocketLike,
} from "./connection.js";
