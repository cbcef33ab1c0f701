// Task API clients for Node over gRPC (HTTP/2), built on the generated descriptors
// in ./gen and Connect's gRPC transport. A session interceptor adds the bearer
// token; errors are ConnectError with google.rpc details (see errorDetails).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { AuthService } from "./gen/taskapi/v1/auth_pb.js";
import { TaskChange_Kind, TaskService } from "./gen/taskapi/v1/task_pb.js";
import { UserService } from "./gen/taskapi/v1/user_pb.js";

export { Code, ConnectError };
export * from "./gen/taskapi/v1/auth_pb.js";
export * from "./gen/taskapi/v1/task_pb.js";
export * from "./gen/taskapi/v1/user_pb.js";

/**
 * Clients for the three services on one HTTP/2 connection.
 * @param {string} target host:port of a replica or of Envoy's gRPC listener
 * @param {{timeoutMs?: number, watchTarget?: string, backoffMs?: [number, number]}} [options]
 *   timeoutMs: default deadline of every call but WatchTasks (10 s); watchTarget: where
 *   WatchTasks goes (default `target`: Envoy's gRPC port routes it; straight to a replica, its
 *   watch port); backoffMs: watchTasks' reconnect backoff, first and longest (100 ms, 5 s)
 */
export function createTaskApi(target, { timeoutMs = 10_000, watchTarget = target, backoffMs = [100, 5_000] } = {}) {
  /** @type {{accessToken: string, refreshToken: string} | undefined} */
  let session;
  const withToken = (next) => async (req) => {
    if (session) req.header.set("authorization", `Bearer ${session.accessToken}`);
    return next(req);
  };
  const baseUrl = (where) => (where.includes("://") ? where : `http://${where}`);
  const transport = createGrpcTransport({
    baseUrl: baseUrl(target),
    defaultTimeoutMs: timeoutMs,
    interceptors: [withToken],
  });
  // Streams live until the client leaves: no default deadline on this one.
  const watch = createClient(TaskService, createGrpcTransport({ baseUrl: baseUrl(watchTarget), interceptors: [withToken] }));
  const api = {
    auth: createClient(AuthService, transport),
    tasks: createClient(TaskService, transport),
    users: createClient(UserService, transport),
    /** The resume token of the last change (or heartbeat) watchTasks saw. */
    lastResumeToken: "",
    /** Keep the session (the AuthSession register/login/refresh return) for the following calls. */
    useSession(newSession) {
      session = newSession;
      return newSession;
    },
    /**
     * The caller's task changes as they happen, from `resumeToken` ("": from now), as an
     * async iterator. A stream that ends (the replica drains) is reopened at once from the
     * last token; one that fails with UNAVAILABLE or is cut (a dropped connection, a slow
     * consumer dropped, a replica gone) is reopened after a backoff with jitter, never sooner than
     * the server's RetryInfo says. So every change arrives once, in order, across reconnects.
     * Throws ResyncRequiredError when the token is past retention (list the tasks again,
     * then watch from now); any other error as a ConnectError. Stop with `signal` or `break`.
     * @param {{resumeToken?: string, heartbeats?: boolean, signal?: AbortSignal, maxReconnects?: number}} [options]
     *   heartbeats: yield them too (kind KIND_UNSPECIFIED); maxReconnects: in a row, without a change between
     * @returns {AsyncGenerator<import("./gen/taskapi/v1/task_pb.js").TaskChange>}
     */
    async *watchTasks({ resumeToken = "", heartbeats = false, signal, maxReconnects = Infinity } = {}) {
      let token = resumeToken;
      let failures = 0;
      for (;;) {
        let error;
        try {
          for await (const change of watch.watchTasks({ resumeToken: token }, { signal })) {
            failures = 0;
            token = change.resumeToken || token;
            api.lastResumeToken = token;
            if (heartbeats || change.kind !== TaskChange_Kind.KIND_UNSPECIFIED) yield change;
          }
        } catch (caught) {
          error = ConnectError.from(caught);
        }
        if (signal?.aborted) return;
        const details = error && errorDetails(error);
        if (details?.reason === RESYNC_REQUIRED) throw new ResyncRequiredError(error);
        // A dropped connection surfaces as CANCELED (connect-node reports the HTTP/2 stream's
        // CANCEL); the caller's own cancel returned above, so here it is the network's.
        if (error && error.code !== Code.Unavailable && error.code !== Code.Canceled) throw error;
        failures += 1;
        if (failures > maxReconnects) throw error ?? new ConnectError("the change feed keeps ending", Code.Unavailable);
        if (error) {
          const [initial, longest] = backoffMs;
          const jittered = Math.random() * Math.min(longest, initial * 2 ** (failures - 1));
          await pause(Math.max(jittered, (details.retryDelaySeconds ?? 0) * 1000), signal);
          if (signal?.aborted) return;
        }
      }
    },
  };
  return api;
}

/** The ErrorInfo reason of a token past the feed's retention. */
export const RESYNC_REQUIRED = "RESYNC_REQUIRED";

/**
 * watchTasks' token is older than the feed keeps (FAILED_PRECONDITION, reason
 * RESYNC_REQUIRED): list the tasks again, then watch from now. `cause` is the ConnectError.
 */
export class ResyncRequiredError extends Error {
  /** @param {ConnectError} cause */
  constructor(cause) {
    super(`resync required: ${cause.rawMessage}`, { cause });
    this.name = "ResyncRequiredError";
    this.code = cause.code;
  }
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => (clearTimeout(timer), resolve()), { once: true });
  });
}

/**
 * The google.rpc details of a failed call: BadRequest field violations as
 * {field: description}, the ErrorInfo reason, the RetryInfo delay in seconds.
 * @param {unknown} error
 */
export function errorDetails(error) {
  const err = ConnectError.from(error);
  const [badRequest] = err.findDetails(BadRequestSchema);
  const [info] = err.findDetails(ErrorInfoSchema);
  const [retry] = err.findDetails(RetryInfoSchema);
  const delay = retry?.retryDelay;
  return {
    code: err.code,
    message: err.rawMessage,
    fieldViolations: Object.fromEntries((badRequest?.fieldViolations ?? []).map((v) => [v.field, v.description])),
    reason: info?.reason ?? "",
    retryDelaySeconds: delay ? Number(delay.seconds) + delay.nanos / 1e9 : undefined,
  };
}
