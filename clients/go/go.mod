// The import path the protos' go_package names. Builds here are GOPATH-style and
// offline against Debian's packages (see tests/clients/test_go_client.py); the
// versions below are those Debian ships, for module-mode users.
module github.com/taskapi/taskapi/gen/go

go 1.19

require (
	google.golang.org/genproto v0.0.0-20200413115906-b5235f65be36
	google.golang.org/grpc v1.33.3
	google.golang.org/protobuf v1.28.1
)
