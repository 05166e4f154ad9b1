#!/usr/bin/env node
// Parse every PromQL expression of the alert rules and the Grafana dashboards
// with Prometheus' own PromQL grammar (@prometheus-io/lezer-promql), offline.
//
// Checked: spec.groups[].rules[].expr of k8s/base/prometheusrule.yaml (a plain
// Prometheus rules file with top-level groups works too) and every "expr" in
// k8s/base/dashboards/*.json: panel targets, panels nested in collapsed rows,
// annotations, and the PromQL part of query variables (label_values(SELECTOR,
// label), query_result(EXPR)). Grafana variables are replaced before parsing:
// $__rate_interval, $__interval, $__range (and any variable used as a range,
// subquery step or offset) by 5m, $__interval_ms/$__range_ms/$__range_s by a
// number, other variables outside quotes by an identifier; inside a quoted
// label value they are left alone (any text is a valid string there).
//
// An expression fails if its syntax tree holds an error node, or breaks one of
// two rules the grammar leaves to Prometheus' Go parser: a range [..] applies
// only to a vector selector, and rate()/increase()/*_over_time()/... need a
// range vector (foo[5m] or a subquery) as their range argument.
//
// The npm packages (pinned in .ci/deploy/promql/package-lock.json) are
// installed by .ci/validate-deploy outside the repository; --node-dir names the
// directory holding their node_modules (default: $MEDIC_DEPLOY_NODE, else
// ${XDG_CACHE_HOME:-~/.cache}/medic-validate-deploy/node).
//
// usage: check-promql.mjs [--node-dir DIR] [--repo DIR] [FILE...]
//        check-promql.mjs [--node-dir DIR] --self-test
// FILE:  *.json is read as a Grafana dashboard, anything else as YAML rules
//        (default: the repository's PrometheusRule and dashboards).
// exit:  0 every expression parses, 1 some do not (or the self-test failed),
//        2 the packages are missing or the usage is wrong.

import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

// ------------------------------------------------------------------ arguments
const args = process.argv.slice(2);
let nodeDir =
  process.env.MEDIC_DEPLOY_NODE ||
  path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "medic-validate-deploy", "node");
let repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
let selfTest = false;
const files = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === "--node-dir" && i + 1 < args.length) nodeDir = args[++i];
  else if (a === "--repo" && i + 1 < args.length) repo = path.resolve(args[++i]);
  else if (a === "--self-test") selfTest = true;
  else if (a === "-h" || a === "--help") {
    console.log("usage: check-promql.mjs [--node-dir DIR] [--repo DIR] [--self-test] [FILE...]");
    process.exit(0);
  } else if (a.startsWith("-")) {
    console.error(`check-promql: unknown option ${a}`);
    process.exit(2);
  } else files.push(path.resolve(a));
}

const require = createRequire(path.join(path.resolve(nodeDir), "noop.js"));
let parser, YAML;
try {
  ({ parser } = require("@prometheus-io/lezer-promql"));
  YAML = require("yaml");
} catch (err) {
  console.error(`check-promql: cannot load the npm packages from ${nodeDir}/node_modules: ${err.message.split("\n")[0]}`);
  console.error("  install them with: npm ci --prefix DIR (package.json and package-lock.json from .ci/deploy/promql/)");
  process.exit(2);
}
const promqlVersion = JSON.parse(
  fs.readFileSync(path.join(path.resolve(nodeDir), "node_modules/@prometheus-io/lezer-promql/package.json"), "utf8"),
).version;

// ------------------------------------------------------------------ PromQL
// Functions whose argument at the given index must be a range vector.
const RANGE_ARG = new Map(
  Object.entries({
    Rate: 0, Irate: 0, Increase: 0, Delta: 0, Idelta: 0, Deriv: 0, Changes: 0, Resets: 0,
    PredictLinear: 0, DoubleExponentialSmoothing: 0, HoltWinters: 0, QuantileOverTime: 1,
  }),
);
function rangeArgIndex(fn) {
  if (RANGE_ARG.has(fn)) return RANGE_ARG.get(fn);
  return fn.endsWith("OverTime") || fn === "TsOfMaxFirstTime" ? 0 : -1;
}
// Wrappers whose value type is the type of their first child.
const TRANSPARENT = new Set(["ParenExpr", "OffsetExpr", "StepInvariantExpr", "AnchoredExpr", "SmoothedExpr"]);

function unwrap(node) {
  while (node && TRANSPARENT.has(node.name) && node.firstChild) node = node.firstChild;
  return node;
}

// Problems in one expression: [{from, to, message}], empty if it is valid.
function promqlProblems(text) {
  const problems = [];
  const tree = parser.parse(text);
  tree.iterate({
    enter(ref) {
      if (ref.type.isError) {
        const found = text.slice(ref.from, ref.to);
        problems.push({
          from: ref.from,
          to: ref.to,
          message: found
            ? `syntax error: unexpected ${JSON.stringify(found.length > 30 ? found.slice(0, 30) + "…" : found)}`
            : ref.from >= text.trimEnd().length
              ? "syntax error: unexpected end of expression"
              : "syntax error: something is missing here",
        });
        return false; // one report per error region
      }
      if (ref.name === "MatrixSelector") {
        const operand = ref.node.firstChild;
        if (operand && operand.name !== "VectorSelector") {
          problems.push({ from: operand.from, to: operand.to, message: "a range [..] applies only to a metric selector" });
        }
      } else if (ref.name === "FunctionCall") {
        const fn = ref.node.getChild("FunctionIdentifier")?.firstChild?.name;
        const body = ref.node.getChild("FunctionCallBody");
        const index = fn ? rangeArgIndex(fn) : -1;
        if (index >= 0 && body) {
          const argsOf = [];
          for (let c = body.firstChild; c; c = c.nextSibling) argsOf.push(c);
          const arg = unwrap(argsOf[index]);
          if (arg && !arg.type.isError && arg.name !== "MatrixSelector" && arg.name !== "SubqueryExpr") {
            const name = text.slice(ref.from, ref.node.getChild("FunctionIdentifier").to);
            problems.push({
              from: arg.from,
              to: arg.to,
              message: `${name}() needs a range vector (e.g. foo[5m]) as argument ${index + 1}`,
            });
          }
        }
      }
      return true;
    },
  });
  return problems;
}

// ------------------------------------------------------------------ Grafana
const DURATION_VARS = new Set(["__rate_interval", "__interval", "__range", "__auto", "__auto_interval"]);
const NUMBER_VARS = new Map([
  ["__interval_ms", "300000"], ["__rate_interval_ms", "300000"], ["__range_ms", "300000"], ["__range_s", "300"],
]);
const VARIABLE = /^(?:\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\])/;

// Replace Grafana template variables by valid PromQL. Returns {text, origin}:
// origin[i] is the index in the original of the character at i in text.
function substituteGrafana(expr) {
  let out = "";
  const origin = [];
  const emit = (s, at) => {
    for (let k = 0; k < s.length; k++) origin.push(at);
    out += s;
  };
  let quote = null;
  for (let i = 0; i < expr.length; ) {
    const ch = expr[i];
    if (quote) {
      if (ch === "\\" && quote !== "`" && i + 1 < expr.length) {
        out += expr.slice(i, i + 2);
        origin.push(i, i + 1);
        i += 2;
        continue;
      }
      if (ch === quote) quote = null;
      emit(ch, i);
      i++;
      continue;
    }
    if (ch === '"' || ch === "'" || ch === "`") {
      quote = ch;
      emit(ch, i);
      i++;
      continue;
    }
    const m = (ch === "$" || ch === "[") && VARIABLE.exec(expr.slice(i));
    if (m) {
      const name = m[1] || m[2] || m[3];
      const before = out.trimEnd();
      const asDuration = DURATION_VARS.has(name) || /[[:]$/.test(before) || /\boffset$/i.test(before);
      let value;
      if (NUMBER_VARS.has(name)) value = NUMBER_VARS.get(name);
      else if (before.endsWith("@")) value = "1700000000"; // a timestamp, e.g. ${__to:date:seconds}
      else if (asDuration) value = "5m";
      else value = `grafana_var_${name}`;
      emit(value, i);
      i += m[0].length;
      continue;
    }
    emit(ch, i);
    i++;
  }
  origin.push(expr.length);
  return { text: out, origin };
}

// [{label, expr, grafana}] for one dashboard, in document order.
function dashboardExprs(dashboard) {
  const found = [];
  const walk = (node, labels) => {
    if (Array.isArray(node)) {
      // Top-level panels after an expanded row belong to that row.
      let row = null;
      for (const item of node) {
        if (item && typeof item === "object" && item.type === "row") {
          row = item.title || "(untitled row)";
          walk(item, labels);
        } else walk(item, row ? [...labels, row] : labels);
      }
      return;
    }
    if (!node || typeof node !== "object") return;
    const here = [...labels];
    if (typeof node.title === "string" && node.title) here.push(node.title);
    else if (typeof node.name === "string" && node.name) here.push(node.name);
    for (const [key, value] of Object.entries(node)) {
      if (key === "templating") continue;
      if (key === "expr" && typeof value === "string") {
        const target = node.refId ? ` target ${node.refId}` : "";
        found.push({ label: `${here.join(" › ") || "(dashboard)"}${target}`, expr: value, grafana: true });
      } else walk(value, here);
    }
  };
  walk({ ...dashboard, title: undefined }, []);
  for (const v of dashboard.templating?.list || []) {
    if (v.type !== "query") continue;
    let q = v.query;
    if (q && typeof q === "object") q = q.query;
    if (typeof q !== "string" || !q.trim()) continue;
    const label = `variable ${v.name}`;
    let m;
    if ((m = /^\s*query_result\(([\s\S]*)\)\s*$/.exec(q))) found.push({ label, expr: m[1], grafana: true });
    else if ((m = /^\s*label_values\(([\s\S]*),\s*[A-Za-z_]\w*\s*\)\s*$/.exec(q)))
      found.push({ label, expr: m[1], grafana: true });
    // label_values(label), label_names(), metrics(regex): no PromQL to parse.
  }
  return found;
}

// [{label, expr, line}] for a rules file (PrometheusRule or plain rules).
function ruleExprs(text) {
  const lineCounter = new YAML.LineCounter();
  const docs = YAML.parseAllDocuments(text, { lineCounter });
  const found = [];
  for (const doc of docs) {
    if (doc.errors.length) throw new Error(`invalid YAML: ${doc.errors[0].message}`);
    const js = doc.toJS();
    if (!js || typeof js !== "object") continue;
    let base;
    if (js.kind === "PrometheusRule") base = ["spec", "groups"];
    else if (Array.isArray(js.groups)) base = ["groups"];
    else continue;
    const groups = doc.getIn(base) ? doc.getIn(base).toJSON() : [];
    groups.forEach((group, g) => {
      (group.rules || []).forEach((rule, r) => {
        const node = doc.getIn([...base, g, "rules", r, "expr"], true);
        const what = rule.alert ? `alert ${rule.alert}` : rule.record ? `record ${rule.record}` : `rule ${r + 1}`;
        found.push({
          label: `group ${group.name}, ${what}`,
          expr: rule.expr === undefined || rule.expr === null ? "" : String(rule.expr),
          line: node?.range ? lineCounter.linePos(node.range[0]).line : undefined,
          literalBlock: node?.type === "BLOCK_LITERAL", // expression line N is file line `line` + N
          grafana: false,
        });
      });
    });
  }
  return found;
}

// ------------------------------------------------------------------ reporting
const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

function lineCol(text, at) {
  const before = text.slice(0, at);
  const line = before.split("\n").length;
  return { line, col: at - before.lastIndexOf("\n") };
}

// Check a list of expressions; print a report for each bad one. Returns the
// number of bad expressions.
function checkAll(where, items) {
  let bad = 0;
  for (const item of items) {
    const sub = item.grafana ? substituteGrafana(item.expr) : { text: item.expr, origin: null };
    const problems = promqlProblems(sub.text);
    if (!problems.length) continue;
    bad++;
    const loc = item.line ? `${where}:${item.line}` : where;
    console.log(`${loc}: ${item.label}:`);
    for (const p of problems.slice(0, 3)) {
      let at = sub.origin ? sub.origin[Math.min(p.from, sub.origin.length - 1)] : p.from;
      at = Math.min(at, item.expr.trimEnd().length); // an error at the end: show it after the last token
      const { line, col } = lineCol(item.expr, at);
      const source = item.expr.split("\n")[line - 1] ?? "";
      const fileLine = item.literalBlock && item.line ? ` (${where}:${item.line + line})` : "";
      console.log(`  expression line ${line}, column ${col}${fileLine}: ${p.message}`);
      console.log(`    ${source}`);
      console.log(`    ${" ".repeat(Math.max(0, col - 1))}^`);
    }
    if (problems.length > 3) console.log(`  (${problems.length - 3} more)`);
    if (sub.origin && sub.text !== item.expr) console.log(`  parsed as: ${sub.text.replace(/\n/g, "\n             ")}`);
  }
  return bad;
}

function displayPath(file) {
  const rel = path.relative(repo, file);
  return rel && !rel.startsWith("..") ? rel : file;
}

function checkFile(file) {
  const where = displayPath(file);
  const text = fs.readFileSync(file, "utf8");
  let items;
  try {
    items = file.endsWith(".json") ? dashboardExprs(JSON.parse(text)) : ruleExprs(text);
  } catch (err) {
    console.log(`${where}: cannot read: ${err.message}`);
    return { count: 0, bad: 1 };
  }
  if (!items.length) {
    console.log(`${where}: no PromQL expression found`);
    return { count: 0, bad: 1 };
  }
  const bad = checkAll(where, items);
  console.log(`${where}: ${plural(items.length, "expression")}, ${bad ? `${bad} with errors` : "all parse"}`);
  return { count: items.length, bad };
}

// ------------------------------------------------------------------ self-test
function runSelfTest() {
  const failures = [];
  const good = [
    "sum(rate(foo[5m]))",
    'histogram_quantile(0.99, sum by (env, le) (rate(foo_bucket{status=~"5.."}[5m]))) > 2',
    'up{job="medic"} == 0',
    'absent(up{job="medic", component="worker"} == 1)',
    "sum by (env) (foo) < sum by (env) (foo offset 1h) * 0.8 and sum by (env) (foo offset 1h) > 0",
    "rate(foo[5m] offset 1h)",
    "max_over_time(rate(foo[5m])[1h:1m])",
    "quantile_over_time(0.9, foo[10m])",
    "rate((foo[5m]))",
    'sum without (pod) (foo{a!="x", b!~"y.*"})',
    "foo / on (env) group_left (pod) bar",
  ];
  const bad = [
    "sum(rate(foo[5m])",
    "rate(foo[5m]) >",
    "sum by env (foo)",
    'foo{job="x"',
    "rat(foo[5m])",
    "foo[5x]",
    "",
    "sum(foo) by",
    "rate(foo)",
    "increase(sum(foo))",
    "quantile_over_time(0.9, foo)",
    "rate(foo)[5m]",
    "-foo[5m]",
    "foo + + ",
  ];
  for (const e of good) {
    const p = promqlProblems(e);
    if (p.length) failures.push(`valid expression rejected: ${JSON.stringify(e)}: ${p[0].message}`);
  }
  for (const e of bad) {
    if (!promqlProblems(e).length) failures.push(`broken expression accepted: ${JSON.stringify(e)}`);
  }

  const grafana = [
    ['sum(rate(foo{env=~"$env"}[$__rate_interval]))', true],
    ['sum(rate(foo{env=~"${env:regex}"}[${window}])) offset $shift', true],
    ["rate(foo[$__interval]) * $__range_s", true],
    ["topk($n, foo)", true],
    ["sum(rate(foo{env=~\"$env\"}[$__rate_interval])", false],
    ['rate(foo{env=~"$env"}[$__rate_interval]) >', false],
  ];
  for (const [e, ok] of grafana) {
    const p = promqlProblems(substituteGrafana(e).text);
    if (ok && p.length) failures.push(`valid dashboard query rejected: ${JSON.stringify(e)}: ${p[0].message}`);
    if (!ok && !p.length) failures.push(`broken dashboard query accepted: ${JSON.stringify(e)}`);
  }
  const sub = substituteGrafana('rate(x{a="$env"}[$__rate_interval])');
  if (sub.text !== 'rate(x{a="$env"}[5m])') failures.push(`unexpected substitution: ${sub.text}`);

  // Extraction: top-level panels, panels of expanded and collapsed rows,
  // annotations, query variables.
  const dashboard = {
    title: "t",
    annotations: { list: [{ name: "deploys", expr: "changes(medic_build_info[5m]) > 0" }] },
    panels: [
      { type: "stat", title: "A", targets: [{ refId: "A", expr: "a" }] },
      { type: "row", title: "Open", panels: [] },
      { type: "timeseries", title: "B", targets: [{ refId: "A", expr: "b" }, { refId: "B", expr: "c" }] },
      { type: "row", title: "Closed", collapsed: true, panels: [{ title: "C", targets: [{ refId: "A", expr: "d(" }] }] },
    ],
    templating: {
      list: [
        { name: "env", type: "query", query: { query: "label_values(medic_build_info{job=\"medic\"}, env)" } },
        { name: "ds", type: "datasource", query: "prometheus" },
      ],
    },
  };
  const labels = dashboardExprs(dashboard).map((x) => `${x.label}=${x.expr}`);
  const want = [
    "deploys=changes(medic_build_info[5m]) > 0",
    "A target A=a",
    "Open › B target A=b",
    "Open › B target B=c",
    "Closed › C target A=d(",
    'variable env=medic_build_info{job="medic"}',
  ];
  if (JSON.stringify(labels) !== JSON.stringify(want)) {
    failures.push(`dashboard extraction: got ${JSON.stringify(labels)}, want ${JSON.stringify(want)}`);
  }
  const rules = ruleExprs(
    [
      "apiVersion: monitoring.coreos.com/v1",
      "kind: PrometheusRule",
      "spec:",
      "  groups:",
      "    - name: g",
      "      rules:",
      "        - alert: Broken",
      "          expr: |",
      "            sum(rate(foo[5m])",
      "        - record: job:foo:rate5m",
      "          expr: sum by (job) (rate(foo[5m]))",
    ].join("\n"),
  );
  const ruleSummary = rules.map((r) => `${r.label}@${r.line}=${promqlProblems(r.expr).length > 0}`);
  const wantRules = ["group g, alert Broken@8=true", "group g, record job:foo:rate5m@11=false"];
  if (JSON.stringify(ruleSummary) !== JSON.stringify(wantRules)) {
    failures.push(`rule extraction: got ${JSON.stringify(ruleSummary)}, want ${JSON.stringify(wantRules)}`);
  }

  for (const f of failures) console.log(`self-test: ${f}`);
  const total = good.length + bad.length + grafana.length + 3;
  console.log(
    `self-test (@prometheus-io/lezer-promql ${promqlVersion}): ` +
      (failures.length ? `${failures.length} of ${total} cases went wrong` : `all ${total} cases as expected`),
  );
  return failures.length ? 1 : 0;
}

// ------------------------------------------------------------------ main
if (selfTest) process.exit(runSelfTest());

if (!files.length) {
  const rules = path.join(repo, "k8s/base/prometheusrule.yaml");
  const dir = path.join(repo, "k8s/base/dashboards");
  files.push(rules);
  if (fs.existsSync(dir)) {
    for (const f of fs.readdirSync(dir).sort()) if (f.endsWith(".json")) files.push(path.join(dir, f));
  }
}
let bad = 0;
let count = 0;
for (const f of files) {
  if (!fs.existsSync(f)) {
    console.log(`${displayPath(f)}: missing`);
    bad++;
    continue;
  }
  const r = checkFile(f);
  bad += r.bad;
  count += r.count;
}
console.log(
  `check-promql (@prometheus-io/lezer-promql ${promqlVersion}): ${plural(count, "expression")} in ${plural(files.length, "file")}, ` +
    (bad ? `${bad} with errors` : "all parse"),
);
process.exit(bad ? 1 : 0);
