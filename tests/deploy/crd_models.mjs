// Validate custom resources with the upstream-generated models of npm @kubernetes-models/*.
// Usage: node crd_models.mjs NODE_MODULES_DIR < objects.json   (a JSON array of objects)
// Prints one line per invalid object; exits 1 if any, 2 if a kind has no model here.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const models = {
  "gateway.networking.k8s.io/v1": ["@kubernetes-models/gateway-api", "gateway.networking.k8s.io/v1"],
  "monitoring.coreos.com/v1": ["@kubernetes-models/prometheus-operator", "monitoring.coreos.com/v1"],
};
const objects = JSON.parse(readFileSync(0, "utf8"));
let failed = 0;
for (const obj of objects) {
  const where = models[obj.apiVersion];
  if (!where) {
    console.log(`no model for ${obj.apiVersion} ${obj.kind}`);
    process.exitCode = 2;
    continue;
  }
  const file = join(modules, where[0], where[1], `${obj.kind}.js`);
  const mod = await import(pathToFileURL(file).href);
  const Model = mod[obj.kind];
  try {
    new Model(obj).validate();
  } catch (err) {
    failed += 1;
    console.log(`${obj.kind}/${obj.metadata?.name}: ${err.message}`);
  }
}
if (failed) process.exitCode = 1;
