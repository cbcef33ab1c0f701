import { render } from "preact";

import { Api, apiBase } from "./api.js";
import { App } from "./App.jsx";
import "./style.css";

render(<App api={new Api(apiBase())} />, document.getElementById("app"));
