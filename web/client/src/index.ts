// @parley/client: a browser and Node client for the Parley chat server.
export { Client, newCmid, decodeToken } from "./client.js";
export type { ClientOptions, ClientEvents, ConnState, PendingSend, WebSocketLike, WebSocketFactory } from "./client.js";
export { register, login, fetchConfig, resolveWS, checkToken } from "./accounts.js";
export type { Registered, LoggedIn, HTTPOptions, WebConfig } from "./accounts.js";
export { ParleyError, isRetryable } from "./errors.js";
export type { ErrorCode } from "./errors.js";
export { memoryStorage, indexedDBStorage } from "./storage.js";
export type { Storage } from "./storage.js";
export { backoff } from "./backoff.js";
export { uploadMedia, downloadMedia } from "./media.js";
export type { Uploaded, UploadOptions } from "./media.js";
export { subscribeWebPush, unsubscribeWebPush, webPushTarget, vapidKeyBytes } from "./webpush.js";
export type * from "./types.js";
