"""The gRPC servicers: thin classes that turn protos into domain calls and domain results
into protos (`convert`), and nothing else. Errors are the domain's; the interceptor chain
maps them to statuses."""
