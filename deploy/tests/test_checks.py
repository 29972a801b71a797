"""The deployment checks must catch broken files: each test breaks a copy of the real
Dockerfile, compose file or Terraform in one way and asserts that the check fails for that
reason (and that the unbroken files pass). Run by deploy/check.sh with the check tools'
venv on PATH:  python -m unittest discover -s deploy/tests
"""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(DEPLOY / "checks"))

import docker_rules  # noqa: E402
import env_keys  # noqa: E402
import parse_tf  # noqa: E402
import tf_refs  # noqa: E402
import tf_rules  # noqa: E402

DOCKERFILE = (DEPLOY / "docker" / "Dockerfile").read_text(encoding="utf-8")
COMPOSE = (DEPLOY / "docker" / "compose.yml").read_text(encoding="utf-8")


def tool(name):
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not on PATH (run through deploy/check.sh)")
    return path


def replaced(text, old, new, count=1):
    assert old in text, f"test fixture out of date: {old!r} is not in the file"
    return text.replace(old, new, count)


class DockerfileRules(unittest.TestCase):
    def assertFails(self, text, rule):
        problems = docker_rules.check_dockerfile(text)
        self.assertTrue(any(p.startswith(rule) for p in problems), f"expected {rule}, got {problems}")

    def test_real_dockerfile_passes(self):
        self.assertEqual(docker_rules.check_dockerfile(DOCKERFILE), [])

    def test_single_stage(self):
        text = replaced(DOCKERFILE, "FROM rust:1.95.0-slim-bookworm AS build", "FROM rust:1.95.0-slim-bookworm")
        text = re.sub(r"FROM gcr.io/\S+\n", "", text)
        text = re.sub(r"--from=build ", "", text)
        self.assertFails(text, "D1")

    def test_unpinned_or_latest_base_image(self):
        self.assertFails(replaced(DOCKERFILE, "gcr.io/distroless/cc-debian12:nonroot", "gcr.io/distroless/cc-debian12"), "D2")
        self.assertFails(replaced(DOCKERFILE, "rust:1.95.0-slim-bookworm", "rust:latest"), "D2")
        # An ARG default is what the FROM resolves to.
        text = "ARG BASE=debian\n" + replaced(DOCKERFILE, "FROM rust:1.95.0-slim-bookworm", "FROM ${BASE}")
        self.assertFails(text, "D2")
        # A registry port is not a tag; a digest is a pin.
        self.assertFalse(docker_rules.image_is_pinned("registry:5000/tollgate"))
        self.assertTrue(docker_rules.image_is_pinned("registry:5000/tollgate@sha256:" + "a" * 64))

    def test_root_user(self):
        self.assertFails(replaced(DOCKERFILE, "USER 65532:65532", "USER root"), "D3")
        self.assertFails(replaced(DOCKERFILE, "USER 65532:65532", "USER 0:0"), "D3")
        self.assertFails(replaced(DOCKERFILE, "USER 65532:65532\n", ""), "D3")

    def test_healthcheck(self):
        self.assertFails(replaced(DOCKERFILE, '"health"]', '"version"]'), "D4")
        self.assertFails(re.sub(r"HEALTHCHECK [^\n]*\\\n[^\n]*\n", "HEALTHCHECK NONE\n", DOCKERFILE), "D4")
        self.assertFails(re.sub(r"HEALTHCHECK [^\n]*\\\n[^\n]*\n", "", DOCKERFILE), "D4")

    def test_add_url(self):
        text = replaced(DOCKERFILE, "WORKDIR /src\n", "WORKDIR /src\nADD https://example.com/x.tar.gz /x.tar.gz\n")
        self.assertFails(text, "D5")

    def test_admin_api_exposed_by_default(self):
        self.assertFails(replaced(DOCKERFILE, 'TOLLGATE_ADMIN_LISTEN="127.0.0.1:8001', 'TOLLGATE_ADMIN_LISTEN="0.0.0.0:8001'), "D6")

    def test_status_listener_on_loopback(self):
        self.assertFails(replaced(DOCKERFILE, 'TOLLGATE_STATUS_LISTEN="0.0.0.0:8007"', 'TOLLGATE_STATUS_LISTEN="127.0.0.1:8007"'), "D6")

    def test_hadolint_catches_a_bad_dockerfile(self):
        bad = replaced(DOCKERFILE, "FROM gcr.io/distroless/cc-debian12:nonroot", "FROM debian")
        bad = replaced(bad, "WORKDIR /src\n", "WORKDIR /src\nRUN cd /src && apt-get install gcc\n")
        with tempfile.TemporaryDirectory() as d:
            good_path, bad_path = Path(d) / "Dockerfile.good", Path(d) / "Dockerfile.bad"
            good_path.write_text(DOCKERFILE)
            bad_path.write_text(bad)
            config = str(DEPLOY / "docker" / ".hadolint.yaml")
            ok = subprocess.run([tool("hadolint"), "--config", config, str(good_path)], capture_output=True, text=True)
            self.assertEqual(ok.returncode, 0, ok.stdout + ok.stderr)
            r = subprocess.run([tool("hadolint"), "--config", config, str(bad_path)], capture_output=True, text=True)
            self.assertNotEqual(r.returncode, 0)
            for rule in ("DL3006", "DL3003", "DL3008"):  # untagged image, cd, unpinned apt package
                self.assertIn(rule, r.stdout)


class ComposeRules(unittest.TestCase):
    def assertFails(self, text, rule):
        problems = docker_rules.check_compose(text)
        self.assertTrue(any(p.startswith(rule) for p in problems), f"expected {rule}, got {problems}")

    def test_real_compose_passes(self):
        self.assertEqual(docker_rules.check_compose(COMPOSE), [])

    def test_does_not_parse(self):
        self.assertFails(COMPOSE.replace("services:\n", "services: [\n", 1), "C1")

    def test_no_postgres_healthcheck(self):
        text = re.sub(r'      test: \["CMD", "pg_isready"[^\n]*\n', "", COMPOSE)
        self.assertFails(text, "C2")

    def test_two_nodes(self):
        text = COMPOSE[: COMPOSE.index("  tollgate-3:")] + COMPOSE[COMPOSE.index("volumes:\n  pgdata:"):]
        self.assertFails(text, "C3")

    def test_node_without_healthcheck(self):
        text = replaced(COMPOSE, "  tollgate-2:\n    <<: *tollgate\n", "  tollgate-2:\n    <<: *tollgate\n    healthcheck:\n      disable: true\n")
        self.assertFails(text, "C3")

    def test_depends_on_without_condition(self):
        text = replaced(COMPOSE, "    depends_on: *after-migrations\n", "    depends_on: [migrations-up]\n")
        self.assertFails(text, "C4")

    def test_migrations_do_not_wait_for_healthy_postgres(self):
        text = replaced(COMPOSE, "        condition: service_healthy", "        condition: service_started")
        self.assertFails(text, "C4")

    def test_nodes_do_not_wait_for_migrations(self):
        text = replaced(
            COMPOSE,
            "    depends_on: &after-migrations\n      migrations-up:\n        condition: service_completed_successfully\n",
            "    depends_on: &after-migrations\n      postgres:\n        condition: service_healthy\n",
        )
        self.assertFails(text, "C4")

    def test_port_published_on_every_interface(self):
        self.assertFails(replaced(COMPOSE, '"127.0.0.1:8001:8001"', '"8001:8001"'), "C5")
        self.assertFails(replaced(COMPOSE, '"127.0.0.1:8001:8001"', '"0.0.0.0:8001:8001"'), "C5")

    def test_admin_api_without_admin_auth(self):
        self.assertFails(re.sub(r"    TOLLGATE_ADMIN_AUTH: [^\n]*\n", "", COMPOSE), "C6")

    def test_unpinned_postgres(self):
        self.assertFails(replaced(COMPOSE, "image: postgres:16.6-bookworm", "image: postgres"), "C7")


def run_parse_tf(root):
    """parse_tf's exit status and its stderr (its stdout, the skip inventory, is dropped)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = parse_tf.main(["parse_tf", str(root)])
    return code, err.getvalue()


class TerraformChecks(unittest.TestCase):
    def copy_tree(self, d):
        dest = Path(d) / "terraform"
        shutil.copytree(DEPLOY / "terraform", dest, ignore=shutil.ignore_patterns(".terraform"))
        return dest

    def test_syntax_error_fails(self):
        with tempfile.TemporaryDirectory() as d:
            root = self.copy_tree(d)
            self.assertEqual(run_parse_tf(root), (0, ""))
            main = root / "modules" / "logs" / "main.tf"
            main.write_text(main.read_text().rstrip().rstrip("}"))  # drop the last closing brace
            code, err = run_parse_tf(root)
            self.assertEqual(code, 1)
            self.assertIn("modules/logs/main.tf", err)

    def test_skip_without_reason_fails(self):
        with tempfile.TemporaryDirectory() as d:
            root = self.copy_tree(d)
            main = root / "modules" / "alb" / "main.tf"
            text = re.sub(r"(#checkov:skip=CKV_AWS_18):[^\n]*", r"\1", main.read_text())
            main.write_text(text)
            code, err = run_parse_tf(root)
            self.assertEqual(code, 1)
            self.assertIn("CKV_AWS_18 without a reason", err)

    def test_no_tf_files_fails(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(SystemExit):
                parse_tf.parse_all([d])

    def assertRefFails(self, path, old, new, rule):
        with tempfile.TemporaryDirectory() as d:
            root = self.copy_tree(d)
            self.assertEqual(tf_refs.check(root), [])
            f = root / path
            f.write_text(replaced(f.read_text(), old, new))
            problems = tf_refs.check(root)
            self.assertTrue(any(p.startswith(rule) for p in problems), f"expected {rule}, got {problems}")

    def test_module_argument_not_declared(self):
        self.assertRefFails("environments/example/main.tf", "  retention_in_days = var.log_retention_days",
                            "  retention_days = var.log_retention_days", "R1")

    def test_required_module_variable_missing(self):
        self.assertRefFails("environments/example/main.tf", "  image              = var.image\n", "", "R1")

    def test_unknown_module_output(self):
        self.assertRefFails("environments/example/main.tf", "module.alb.target_group_arn", "module.alb.target_group", "R2")

    def test_undeclared_variable(self):
        self.assertRefFails("modules/gateway/main.tf", "var.log_group_arn", "var.log_group", "R3")

    def test_tfvars_example_key_not_declared(self):
        self.assertRefFails("environments/example/terraform.tfvars.example", "# db_multi_az ", "# db_multi_azs ", "R5")

    def test_unknown_resource(self):
        self.assertRefFails("modules/gateway/main.tf", "aws_security_group.task.id", "aws_security_group.tasks.id", "R4")

    def assertRuleFails(self, path, old, new, rule):
        with tempfile.TemporaryDirectory() as d:
            root = self.copy_tree(d)
            self.assertEqual(tf_rules.check(root), [])
            f = root / path
            f.write_text(replaced(f.read_text(), old, new))
            problems = tf_rules.check(root)
            self.assertTrue(any(p.startswith(rule) for p in problems), f"expected {rule}, got {problems}")

    def test_health_check_on_the_admin_api(self):
        self.assertRuleFails("modules/alb/main.tf", "port                = tostring(var.health_check_port)",
                             'port                = "8001"', "L1")
        self.assertRuleFails("modules/alb/variables.tf", "  default     = 8007", "  default     = 8001", "L1")

    def test_health_check_path(self):
        self.assertRuleFails("modules/alb/main.tf", '"/status/ready"', '"/"', "L1")

    def test_plain_http_listener(self):
        self.assertRuleFails("modules/alb/main.tf", 'protocol          = "HTTPS"', 'protocol          = "HTTP"', "L2")

    def test_admin_api_open_to_the_internet(self):
        self.assertRuleFails("modules/gateway/main.tf", "  cidr_ipv4         = each.value\n\n  lifecycle {\n    # Inside the VPC",
                             "  cidr_ipv4         = \"0.0.0.0/0\"\n\n  lifecycle {\n    # Inside the VPC", "L3")

    def test_checkov_catches_a_log_group_without_retention_or_key(self):
        with tempfile.TemporaryDirectory() as d:
            module = Path(d) / "logs"
            shutil.copytree(DEPLOY / "terraform" / "modules" / "logs", module)
            main = module / "main.tf"
            text = re.sub(r"  (retention_in_days|kms_key_id) [^\n]*\n", "", main.read_text())
            main.write_text(text)
            config = str(DEPLOY / "terraform" / ".checkov.yaml")
            r = subprocess.run(
                [tool("checkov"), "--quiet", "--compact", "--skip-download", "--framework", "terraform",
                 "--config-file", config, "--directory", str(module)],
                capture_output=True, text=True,
            )
            self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
            self.assertIn("CKV_AWS_338", r.stdout)  # retention under a year
            self.assertIn("CKV_AWS_158", r.stdout)  # not KMS-encrypted


@unittest.skipUnless(os.environ.get("TOLLGATE_BIN"), "needs a tollgate binary (TOLLGATE_BIN)")
class EnvironmentSettings(unittest.TestCase):
    """The real binary rejects what the kit must never pass."""

    def check(self, env):
        return env_keys.run_check(os.environ["TOLLGATE_BIN"], env)

    def test_real_settings_pass(self):
        image = env_keys.dockerfile_env(DOCKERFILE)
        sets = {"image": image, **env_keys.compose_envs(COMPOSE, image)}
        sets.update(env_keys.terraform_envs(DEPLOY / "terraform"))
        for name, env in sets.items():
            code, output = self.check(env)
            self.assertEqual(code, 0, f"{name}: {output}")
            self.assertNotIn("warn", output.lower(), f"{name}: {output}")

    def test_typo_in_compose_key(self):
        text = replaced(COMPOSE, "TOLLGATE_PG_DATABASE:", "TOLLGATE_PG_DATABSE:")
        env = env_keys.compose_envs(text, env_keys.dockerfile_env(DOCKERFILE))["compose service tollgate-1"]
        code, output = self.check(env)
        self.assertIn("warn", output.lower())
        self.assertIn("TOLLGATE_PG_DATABSE", output)

    def test_deprecated_key_in_terraform(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d) / "terraform"
            shutil.copytree(DEPLOY / "terraform", root)
            main = root / "environments" / "example" / "main.tf"
            main.write_text(replaced(main.read_text(), "TOLLGATE_CASSANDRA_READ_CONSISTENCY ", "TOLLGATE_CASSANDRA_CONSISTENCY "))
            env = env_keys.terraform_envs(root)["terraform, database = cassandra"]
            code, output = self.check(env)
            self.assertIn("warn", output.lower())
            self.assertIn("deprecated", output)

    def test_invalid_value(self):
        env = dict(env_keys.dockerfile_env(DOCKERFILE), TOLLGATE_STATUS_LISTEN="0.0.0.0:notaport")
        code, output = self.check(env)
        self.assertNotEqual(code, 0)
        self.assertIn("status_listen", output)


if __name__ == "__main__":
    unittest.main()
