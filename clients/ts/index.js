// Task API clients for Node over gRPC (HTTP/2), built on the generated descriptors
// in ./gen and Connect's gRPC transport. A session interceptor adds the bearer
// token; errors are ConnectError with google.rpc details (see errorDetails).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema, ErrorInfoSchema, RetryInfoSchema } from "./gen/google/rpc/error_details_pb.js";
import { AuthService } from "./gen/taskapi/v1/auth_pb.js";
import { TaskService } from "./gen/taskapi/v1/task_pb.js";
import { UserService } from "./gen/taskapi/v1/user_pb.js";

export { Code, ConnectError };
export * from "./gen/taskapi/v1/auth_pb.js";
export * from "./gen/taskapi/v1/task_pb.js";
export * from "./gen/taskapi/v1/user_pb.js";

/**
 * Clients for the three services on one HTTP/2 connection.
 * @param {string} target host:port of a replica or of Envoy's gRPC listener
 * @param {{timeoutMs?: number}} [options] default deadline of every call (10 s)
 */
export function createTaskApi(target, { timeoutMs = 10_000 } = {}) {
  /** @type {{accessToken: string, refreshToken: string} | undefined} */
  let session;
  const withToken = (next) => async (req) => {
    if (session) req.header.set("authorization", `Bearer ${session.accessToken}`);
    return next(req);
  };
  const transport = createGrpcTransport({
    baseUrl: target.includes("://") ? target : `http://${target}`,
    defaultTimeoutMs: timeoutMs,
    interceptors: [withToken],
  });
  const api = {
    auth: createClient(AuthService, transport),
    tasks: createClient(TaskService, transport),
    users: createClient(UserService, transport),
    /** Keep the session (the AuthSession register/login/refresh return) for the following calls. */
    useSession(newSession) {
      session = newSession;
      return newSession;
    },
  };
  return api;
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
