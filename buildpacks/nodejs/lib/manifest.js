// What a Node.js app asks for, read from package.json and its lockfiles; run by bin/compile with
// the stack's node (npm's own semver comes from the stack's npm).
//
//   node manifest.js facts BUILD_DIR         key=value lines, one per fact (an empty value is kept:
//                                            the shell reads lines, never whitespace-split fields)
//   node manifest.js satisfies VERSION RANGE exit 0 if VERSION is in RANGE, 1 if not, 2 if RANGE is bad
//   node manifest.js pick RANGE < JSON       the highest version in `npm view NAME@RANGE version
//                                            --json` output (a string or a list); exit 1 if none
"use strict";

const fs = require("fs");
const path = require("path");
const semver = require("semver");

function fail(message) {
  process.stdout.write(message + "\n");
  process.exit(2);
}

// One line per value: a newline inside a field would let package.json inject another fact.
function line(key, value) {
  process.stdout.write(`${key}=${String(value === undefined || value === null ? "" : value).replace(/[\r\n]/g, " ")}\n`);
}

function facts(buildDir) {
  let pkg;
  try {
    pkg = JSON.parse(fs.readFileSync(path.join(buildDir, "package.json"), "utf8"));
  } catch (e) {
    fail(`Error: package.json is not valid JSON (${e.message.split("\n")[0]}); fix it and push again.`);
  }
  if (pkg === null || typeof pkg !== "object" || Array.isArray(pkg)) {
    fail("Error: package.json must hold a JSON object; fix it and push again.");
  }
  const engines = pkg.engines && typeof pkg.engines === "object" ? pkg.engines : {};
  const scripts = pkg.scripts && typeof pkg.scripts === "object" ? pkg.scripts : {};
  for (const name of ["node", "npm", "yarn", "pnpm"]) {
    const range = engines[name];
    if (range !== undefined && typeof range !== "string") {
      fail(`Error: engines.${name} in package.json must be a version range string such as "22.x".`);
    }
    line(`engines_${name}`, (range || "").trim());
  }
  let manager = "";
  let managerVersion = "";
  if (pkg.packageManager !== undefined) {
    const match = typeof pkg.packageManager === "string" && /^(npm|yarn|pnpm)@([^+\s]+)(\+.*)?$/.exec(pkg.packageManager);
    if (!match || !semver.valid(match[2])) {
      fail(`Error: packageManager in package.json is '${pkg.packageManager}'; write it as name@version, ` +
           "e.g. yarn@4.5.0 or pnpm@9.12.0 (npm, yarn or pnpm).");
    }
    manager = match[1];
    managerVersion = match[2];
  }
  line("package_manager", manager);
  line("package_manager_version", managerVersion);
  for (const name of ["build", "heroku-prebuild", "heroku-postbuild", "heroku-cleanup", "start"]) {
    line(`script_${name.replace(/-/g, "_")}`, typeof scripts[name] === "string" && scripts[name].trim() ? "1" : "");
  }
  const lockfiles = ["package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml"]
    .filter((name) => fs.existsSync(path.join(buildDir, name)));
  line("lockfiles", lockfiles.join(" "));
  let berry = "";
  if (lockfiles.includes("yarn.lock")) {
    // Yarn 2+ lockfiles are YAML with a __metadata block; classic ones are not.
    berry = /^__metadata:/m.test(fs.readFileSync(path.join(buildDir, "yarn.lock"), "utf8")) ? "1" : "";
  }
  line("yarn_berry_lockfile", berry);
}

function main(argv) {
  const [command, ...args] = argv;
  if (command === "facts") {
    facts(args[0]);
  } else if (command === "satisfies") {
    const range = semver.validRange(args[1]);
    if (range === null) process.exit(2);
    process.exit(semver.satisfies(args[0], range) ? 0 : 1);
  } else if (command === "pick") {
    let data;
    try {
      data = JSON.parse(fs.readFileSync(0, "utf8") || "[]");
    } catch (e) {
      process.exit(1);
    }
    const versions = (Array.isArray(data) ? data : [data]).filter((v) => typeof v === "string" && semver.valid(v));
    const best = semver.rsort(versions)[0];
    if (!best) process.exit(1);
    process.stdout.write(best + "\n");
  } else {
    fail(`manifest.js: unknown command ${command}`);
  }
}

main(process.argv.slice(2));
