// Package livetest calls a live Task API over gRPC with the generated Go stubs.
// TASKAPI_GRPC_TARGET (host:port) names the server; tests/clients/test_go_client.py
// starts one and runs this test offline, GOPATH-style, against Debian's Go packages.
package livetest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	taskapiv1 "github.com/taskapi/taskapi/gen/go/taskapi/v1"
)

func TestRegisterCreateList(t *testing.T) {
	target := os.Getenv("TASKAPI_GRPC_TARGET")
	if target == "" {
		t.Skip("TASKAPI_GRPC_TARGET is not set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// grpc 1.33 (Debian) predates credentials/insecure; WithInsecure is its plaintext option.
	conn, err := grpc.DialContext(ctx, target, grpc.WithInsecure(), grpc.WithBlock())
	if err != nil {
		t.Fatalf("dial %s: %v", target, err)
	}
	defer conn.Close()
	auth := taskapiv1.NewAuthServiceClient(conn)
	tasks := taskapiv1.NewTaskServiceClient(conn)

	email := fmt.Sprintf("go-%d@example.com", time.Now().UnixNano())
	session, err := auth.Register(ctx, &taskapiv1.RegisterRequest{Email: email, Password: "correct horse", Name: "Go"})
	if err != nil {
		t.Fatalf("register: %v", err)
	}
	if session.GetUser().GetEmail() != email || session.GetTokenType() != "Bearer" {
		t.Fatalf("unexpected session %v", session)
	}
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+session.GetAccessToken())

	created, err := tasks.CreateTask(authed, &taskapiv1.CreateTaskRequest{
		Task:      &taskapiv1.Task{Title: proto.String("Write the Go client"), Priority: taskapiv1.TaskPriority_HIGH.Enum(), Tags: []string{"go"}},
		RequestId: fmt.Sprintf("go-%d", time.Now().UnixNano()),
	})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	if created.GetStatus() != taskapiv1.TaskStatus_PENDING || created.GetOwner() != session.GetUser().GetId() {
		t.Fatalf("unexpected task %v", created)
	}

	fetched, err := tasks.GetTask(authed, &taskapiv1.GetTaskRequest{Id: created.GetId()})
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if fetched.GetTitle() != "Write the Go client" {
		t.Fatalf("unexpected task %v", fetched)
	}

	page, err := tasks.ListTasks(authed, &taskapiv1.ListTasksRequest{PageSize: 10})
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if page.GetTotalSize() != 1 || len(page.GetTasks()) != 1 || page.GetTasks()[0].GetId() != created.GetId() {
		t.Fatalf("unexpected page %v", page)
	}

	// A broken rule answers INVALID_ARGUMENT with a BadRequest naming the field.
	tooLong := strings.Repeat("x", 101)
	_, err = tasks.CreateTask(authed, &taskapiv1.CreateTaskRequest{Task: &taskapiv1.Task{Title: &tooLong}})
	st := status.Convert(err)
	if st.Code() != codes.InvalidArgument {
		t.Fatalf("want INVALID_ARGUMENT, got %v", err)
	}
	fields := map[string]bool{}
	for _, detail := range st.Details() {
		if bad, ok := detail.(*errdetails.BadRequest); ok {
			for _, v := range bad.GetFieldViolations() {
				fields[v.GetField()] = true
			}
		}
	}
	if !fields["task.title"] {
		t.Fatalf("want a field violation on task.title, got details %v", st.Details())
	}

	// Without a token: UNAUTHENTICATED.
	if _, err := tasks.ListTasks(ctx, &taskapiv1.ListTasksRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("want UNAUTHENTICATED, got %v", err)
	}
}
