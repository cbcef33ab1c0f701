// The Task API reference: Swagger UI over the generated document (taskapi.openapi.json, beside
// this page). `?api=http://127.0.0.1:8080` points "Try it out" at that stack's REST port (taskapi
// dev prints the link with its own port); the stack allows this page's origin by CORS.
/* global SwaggerUIBundle */
const api = new URLSearchParams(window.location.search).get("api");

fetch("taskapi.openapi.json")
  .then((response) => response.json())
  .then((spec) => {
    if (api) spec.servers = [{ url: api, description: "this stack (Envoy's REST port)" }];
    window.ui = SwaggerUIBundle({
      spec,
      dom_id: "#swagger-ui",
      deepLinking: true,
      displayOperationId: true,
      displayRequestDuration: true,
      defaultModelsExpandDepth: 0,
      showExtensions: true,
      // No call to the public validator service: the page works offline.
      validatorUrl: null,
      onComplete: () => document.body.setAttribute("data-ready", "true"),
    });
  });
