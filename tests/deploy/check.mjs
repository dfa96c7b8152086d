// Validates rendered Kubernetes manifests (multi-document YAML files, the
// output of `kubectl kustomize`) three ways and prints one line per problem:
//
//   [schema] kubernetes-models' validator for the object's apiVersion/kind
//            (the Kubernetes OpenAPI schema: types, enums, required fields;
//            unknown fields pass);
//   [types]  the object as a typed literal of kubernetes-types under
//            `tsc --noEmit --strict`: the excess-property check rejects a
//            misspelled or unknown field such as `imagee`;
//   [policy] toolmesh's own rules for its pods (non-root, read-only root
//            filesystem, no privilege escalation, capabilities dropped,
//            requests and limits, a worker grace period longer than its
//            --drain-grace).
//
// An apiVersion/kind without a model in kubernetes-models is an error, not a
// pass. Works offline (everything comes from tests/deploy/node_modules).
//
// Usage: node check.mjs FILE.yaml...
// Exit status: 0 when every object of every file passes, 1 otherwise, 2 on
// bad usage or a file that cannot be read or parsed.
import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseAllDocuments } from "yaml";

const here = dirname(fileURLToPath(import.meta.url));
const typesRoot = join(here, "node_modules", "kubernetes-types");
const tscPath = join(here, "node_modules", "typescript", "bin", "tsc");

// "apps/v1" -> {group: "apps", version: "v1"}; "v1" -> core.
function splitApiVersion(apiVersion) {
  const slash = apiVersion.indexOf("/");
  if (slash < 0) return { group: "", version: apiVersion };
  return { group: apiVersion.slice(0, slash), version: apiVersion.slice(slash + 1) };
}

function describe(obj, index) {
  const name = obj?.metadata?.name ?? "(no name)";
  return `#${index} ${obj?.kind ?? "(no kind)"}/${name}`;
}

function isPlainObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

// Reads every document of every file. Returns [{file, index, obj}].
function loadObjects(files) {
  const objects = [];
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      console.error(`check.mjs: cannot read ${file}: ${e.message}`);
      process.exit(2);
    }
    const docs = parseAllDocuments(text, { prettyErrors: true });
    if (!Array.isArray(docs)) {
      console.error(`check.mjs: ${file}: not a YAML stream`);
      process.exit(2);
    }
    for (const doc of docs) {
      if (doc.errors.length > 0) {
        console.error(`check.mjs: ${file}: YAML error: ${doc.errors[0].message}`);
        process.exit(2);
      }
      const obj = doc.toJS();
      if (obj === null || obj === undefined) continue;
      objects.push({ file: basename(file), index: objects.length, obj });
    }
  }
  return objects;
}

// [schema]: kubernetes-models' validator of the object's kind.
async function checkSchema({ file, index, obj }, problems) {
  const where = `${file} ${describe(obj, index)}`;
  if (!isPlainObject(obj) || typeof obj.apiVersion !== "string" ||
      typeof obj.kind !== "string" || !/^[A-Za-z0-9]+$/.test(obj.kind)) {
    problems.push(`[schema] ${where}: not an object with a string apiVersion and kind`);
    return false;
  }
  const { group, version } = splitApiVersion(obj.apiVersion);
  const modulePath = `kubernetes-models/${group === "" ? "" : group + "/"}${version}/${obj.kind}`;
  let Model;
  try {
    Model = (await import(modulePath))[obj.kind];
  } catch {
    Model = undefined;
  }
  if (typeof Model !== "function") {
    problems.push(`[schema] ${where}: kubernetes-models has no model for ${obj.apiVersion} ${obj.kind}`);
    return false;
  }
  try {
    new Model(obj).validate();
  } catch (e) {
    problems.push(`[schema] ${where}: ${String(e.message).split("\n").join("; ")}`);
  }
  return true;
}

// [policy]: rules every toolmesh pod template keeps.
function podTemplateOf(obj) {
  if (["Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"].includes(obj.kind)) {
    return obj.spec?.template;
  }
  if (obj.kind === "Pod") return obj;
  return undefined;
}

function parseSeconds(duration) {
  // The worker's --drain-grace: an absl duration such as 30s, 1m30s, 500ms.
  const re = /(\d+(?:\.\d+)?)(h|ms|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (const m of duration.matchAll(re)) {
    const n = Number(m[1]);
    total += m[2] === "h" ? n * 3600 : m[2] === "m" ? n * 60 : m[2] === "s" ? n : n / 1000;
    consumed += m[0].length;
  }
  return consumed === duration.length && consumed > 0 ? total : undefined;
}

function flagValue(args, flag) {
  for (let i = 0; i < args.length; ++i) {
    if (args[i] === flag && i + 1 < args.length) return String(args[i + 1]);
    if (String(args[i]).startsWith(flag + "=")) return String(args[i]).slice(flag.length + 1);
  }
  return undefined;
}

function checkPolicy({ file, index, obj }, problems) {
  const template = podTemplateOf(obj);
  if (!isPlainObject(template)) return;
  const where = `${file} ${describe(obj, index)}`;
  const spec = template.spec ?? {};
  const podSc = spec.securityContext ?? {};
  if (spec.automountServiceAccountToken !== false) {
    problems.push(`[policy] ${where}: automountServiceAccountToken must be false`);
  }
  for (const c of spec.containers ?? []) {
    const at = `${where} container ${c.name}`;
    const sc = c.securityContext ?? {};
    if ((sc.runAsNonRoot ?? podSc.runAsNonRoot) !== true) {
      problems.push(`[policy] ${at}: runAsNonRoot must be true`);
    }
    if (sc.readOnlyRootFilesystem !== true) {
      problems.push(`[policy] ${at}: readOnlyRootFilesystem must be true`);
    }
    if (sc.allowPrivilegeEscalation !== false) {
      problems.push(`[policy] ${at}: allowPrivilegeEscalation must be false`);
    }
    if (!(sc.capabilities?.drop ?? []).includes("ALL")) {
      problems.push(`[policy] ${at}: capabilities.drop must contain ALL`);
    }
    if ((sc.seccompProfile ?? podSc.seccompProfile)?.type !== "RuntimeDefault") {
      problems.push(`[policy] ${at}: seccompProfile.type must be RuntimeDefault`);
    }
    for (const kind of ["requests", "limits"]) {
      const r = c.resources?.[kind] ?? {};
      if (r.cpu === undefined || r.memory === undefined) {
        problems.push(`[policy] ${at}: resources.${kind} needs cpu and memory`);
      }
    }
    const command = [...(c.command ?? []), ...(c.args ?? [])];
    if (command[0] === "toolmesh-worker") {
      const drain = flagValue(command, "--drain-grace") ?? "30s";
      const drainSeconds = parseSeconds(drain);
      const grace = spec.terminationGracePeriodSeconds ?? 30;
      if (drainSeconds === undefined) {
        problems.push(`[policy] ${at}: cannot read --drain-grace ${drain}`);
      } else if (!(typeof grace === "number" && grace > drainSeconds)) {
        problems.push(`[policy] ${at}: terminationGracePeriodSeconds (${grace}) must be longer than --drain-grace (${drain})`);
      }
    }
  }
}

// [types]: one .ts file, every object a typed literal; tsc --strict.
function typeName(obj) {
  const { group, version } = splitApiVersion(obj.apiVersion);
  const dir = group === "" ? "core" : group.split(".")[0];
  const dts = join(typesRoot, dir, `${version}.d.ts`);
  if (!existsSync(dts)) return undefined;
  return { module: join(typesRoot, dir, version), name: obj.kind };
}

function checkTypes(objects, problems) {
  const lines = [];
  const starts = [];  // [first line (1-based), object]
  objects.forEach(({ file, index, obj }) => {
    const t = typeName(obj);
    const where = `${file} ${describe(obj, index)}`;
    if (t === undefined) {
      problems.push(`[types] ${where}: kubernetes-types has no module for ${obj.apiVersion}`);
      return;
    }
    lines.push(`import type { ${t.name} as T${index} } from ${JSON.stringify(t.module)};`);
    starts.push([lines.length + 1, where]);
    for (const line of `const o${index}: T${index} = ${JSON.stringify(obj, null, 2)};`.split("\n")) {
      lines.push(line);
    }
    lines.push(`void o${index};`);
  });
  if (starts.length === 0) return;
  lines.push("export {};");
  const dir = mkdtempSync(join(tmpdir(), "toolmesh-deploy-check-"));
  try {
    const source = join(dir, "manifests.ts");
    writeFileSync(source, lines.join("\n") + "\n");
    // No @types packages: only kubernetes-types, imported by absolute path.
    const tsconfig = join(dir, "tsconfig.json");
    writeFileSync(tsconfig, JSON.stringify({
      compilerOptions: {
        noEmit: true, strict: true, pretty: false, target: "es2022",
        module: "esnext", moduleResolution: "bundler", types: [],
      },
      files: [source],
    }));
    let output = "";
    try {
      execFileSync(process.execPath, [tscPath, "--project", tsconfig],
        { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
    } catch (e) {
      output = `${e.stdout ?? ""}${e.stderr ?? ""}`;
      if (output.trim() === "") output = `tsc failed: ${e.message}`;
    }
    for (const line of output.split("\n")) {
      if (line.trim() === "") continue;
      const m = /\((\d+),\d+\): (.*)$/.exec(line);
      if (m === null) {
        // Continuation lines of a message belong to the previous problem.
        if (problems.length > 0 && problems[problems.length - 1].startsWith("[types]") && /^\s/.test(line)) {
          problems[problems.length - 1] += ` ${line.trim()}`;
        } else {
          problems.push(`[types] ${line.trim()}`);
        }
        continue;
      }
      const lineNo = Number(m[1]);
      let where = "(generated file)";
      for (const [start, w] of starts) {
        if (start <= lineNo) where = w;
      }
      problems.push(`[types] ${where}: ${m[2]}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const files = process.argv.slice(2);
  if (files.length === 0) {
    console.error("usage: node check.mjs FILE.yaml...");
    process.exit(2);
  }
  for (const needed of [typesRoot, tscPath, join(here, "node_modules", "kubernetes-models")]) {
    if (!existsSync(needed)) {
      console.error(`check.mjs: ${needed} is missing: run \`npm ci\` in ${here}`);
      process.exit(2);
    }
  }
  const objects = loadObjects(files);
  if (objects.length === 0) {
    console.error(`check.mjs: no objects in ${files.join(" ")}`);
    process.exit(1);
  }
  const problems = [];
  const typed = [];
  for (const o of objects) {
    if (await checkSchema(o, problems)) typed.push(o);
    if (isPlainObject(o.obj)) checkPolicy(o, problems);
  }
  checkTypes(typed, problems);
  for (const p of problems) console.log(p);
  console.log(`check.mjs: ${objects.length} objects in ${files.length} file(s), ${problems.length} problem(s)`);
  process.exit(problems.length === 0 ? 0 : 1);
}

await main();
