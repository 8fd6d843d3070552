#!/usr/bin/env python3
"""Validates docker/compose.yaml without a Docker engine.

1. Against the Compose Specification JSON schema vendored in docker/schema/compose-spec.json
   (from the docker-compose 1.29.2 package on PyPI; see docker/schema/README.md).
2. What a schema cannot see: every depends_on target is a service, every named volume is
   declared, every bind-mounted file and the build context/Dockerfile exist, every ${VAR} has a
   default (the file works without an .env), rolegate gets every secret its config names, and
   Prometheus scrapes rolegate's admin port.

Usage: python3 docker/check-compose.py [docker/compose.yaml]     (needs PyYAML and jsonschema)
Exit 0 and one "ok" line, or every problem found and exit 1.
"""
import json
import os
import re
import sys

import jsonschema
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))


def interpolation_problems(text):
    problems = []
    for match in re.finditer(r"\$\{([^}]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", text):
        inner = match.group(1)
        if inner is None or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*:?-.*", inner):
            problems.append(f"{match.group(0)}: give every variable a default (${{VAR:-value}})")
    return problems


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "compose.yaml")
    base = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        text = f.read()
    doc = yaml.safe_load(text)
    with open(os.path.join(HERE, "schema", "compose-spec.json"), encoding="utf-8") as f:
        schema = json.load(f)

    problems = []
    # The schema says draft 2019-09 (with a trailing '#' that jsonschema does not recognise).
    validator_class = getattr(jsonschema, "Draft201909Validator", jsonschema.Draft7Validator)
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    for error in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        problems.append(f"schema: {where}: {error.message}")

    problems += interpolation_problems(text)
    services = doc.get("services") or {}
    volumes = doc.get("volumes") or {}
    for name, svc in services.items():
        deps = svc.get("depends_on") or []
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                problems.append(f"services/{name}/depends_on: no service {dep!r}")
        for vol in svc.get("volumes") or []:
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                if not os.path.exists(os.path.join(base, source)):
                    problems.append(f"services/{name}/volumes: {source} does not exist")
            elif source and source not in volumes:
                problems.append(f"services/{name}/volumes: named volume {source!r} is not declared")
        build = svc.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            context = os.path.join(base, context)
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if not os.path.isfile(os.path.join(context, dockerfile)):
                problems.append(f"services/{name}/build: no {dockerfile} in {context}")

    rolegate = services.get("rolegate")
    if rolegate is None:
        problems.append("no rolegate service")
    else:
        env = rolegate.get("environment") or {}
        env_names = set(env.keys()) if isinstance(env, dict) else {e.split("=")[0] for e in env}
        config_path = None
        for vol in rolegate.get("volumes") or []:
            source, _, target = vol.partition(":")
            if target.split(":")[0] == "/etc/rolegate/rolegate.yaml":
                config_path = os.path.join(base, source)
        if config_path is None:
            problems.append("rolegate: no config mounted at /etc/rolegate/rolegate.yaml")
        else:
            with open(config_path, encoding="utf-8") as f:
                config_text = f.read()
            for var in re.findall(r"\b(?:password|token)_env:\s*([A-Za-z_][A-Za-z0-9_]*)", config_text):
                if var not in env_names:
                    problems.append(f"rolegate: {os.path.basename(config_path)} reads ${var}, which the service does not set")
            admin = re.search(r"^\s*listen:\s*\"?([0-9.]+):(\d+)", config_text, re.M)
            prom_path = os.path.join(base, "prometheus.yml")
            if admin and os.path.exists(prom_path):
                with open(prom_path, encoding="utf-8") as f:
                    prom = yaml.safe_load(f)
                targets = [t for job in prom.get("scrape_configs", [])
                           for sc in job.get("static_configs", []) for t in sc.get("targets", [])]
                if f"rolegate:{admin.group(2)}" not in targets:
                    problems.append(f"prometheus.yml does not scrape rolegate:{admin.group(2)}: {targets}")
                if admin.group(1).startswith("127."):
                    problems.append("rolegate's admin listens on loopback: Prometheus cannot reach it")

    if problems:
        for p in problems:
            print(f"{path}: {p}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({len(services)} services, schema {os.path.relpath(os.path.join(HERE, 'schema', 'compose-spec.json'), base)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
