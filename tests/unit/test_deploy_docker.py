"""Dockerfiles parse, copy only what exists, pin what pyproject pins, and start the tested commands."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from loraforge.cli import build_parser
from loraforge.deploy.docker import COPIED, IMAGES, write_dockerfiles

ROOT = Path(__file__).resolve().parents[2]


def _torch_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(d for d in deps if re.match(r"torch==", d))


@pytest.fixture(scope="module")
def dockerfiles(tmp_path_factory):
    out = tmp_path_factory.mktemp("docker")
    written = write_dockerfiles(out)
    assert {p.name for p in written} == {f"Dockerfile.{k}{s}" for k in IMAGES for s in ("", ".dockerignore")}
    parsed = {}
    for kind in IMAGES:
        df = DockerfileParser(fileobj=open(out / f"Dockerfile.{kind}", "rb"))
        parsed[kind] = df
    return parsed


def _instr(df, name):
    return [i["value"] for i in df.structure if i["instruction"] == name]


@pytest.mark.parametrize("kind", list(IMAGES))
def test_base_is_pinned_and_user_is_not_root(dockerfiles, kind):
    df = dockerfiles[kind]
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", df.baseimage), df.baseimage
    assert _instr(df, "USER")[-1].split(":")[0] not in ("", "0", "root")
    volumes = json.loads(_instr(df, "VOLUME")[-1])
    assert "/cache" in volumes and df.envs["LORAFORGE_HOME"] == "/cache"  # the model cache outlives the container


@pytest.mark.parametrize("kind", list(IMAGES))
def test_copy_sources_exist_in_the_repo(dockerfiles, kind):
    sources = []
    for value in _instr(dockerfiles[kind], "COPY"):
        args = [a for a in shlex.split(value) if not a.startswith("--")]
        sources += args[:-1]
    assert sources and set(sources) <= set(COPIED)
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    assert (ROOT / "src" / "loraforge" / "cli" / "__init__.py").is_file()  # the copied src holds the CLI


@pytest.mark.parametrize("kind", list(IMAGES))
def test_installs_pinned_torch_then_loraforge(dockerfiles, kind):
    runs = _instr(dockerfiles[kind], "RUN")
    torch_runs = [r for r in runs if "pip install torch" in r]
    assert len(torch_runs) == 1 and f"pip install {_torch_pin()}" in torch_runs[0]
    assert ("download.pytorch.org/whl/cpu" in torch_runs[0]) == (kind != "train-cuda")
    install = [r for r in runs if re.search(r"pip install /opt/loraforge\b", r)]
    assert install and runs.index(torch_runs[0]) < runs.index(install[0])
    copy_dest = {shlex.split(v)[-1].rstrip("/") for v in _instr(dockerfiles[kind], "COPY")}
    assert "/opt/loraforge" in copy_dest


@pytest.mark.parametrize("kind", list(IMAGES))
def test_entrypoint_is_a_command_the_cli_accepts(dockerfiles, kind):
    entry = json.loads(_instr(dockerfiles[kind], "ENTRYPOINT")[-1])
    cmd = json.loads(_instr(dockerfiles[kind], "CMD")[-1])
    assert entry == ["loraforge", "serve" if kind == "serve" else "train"]
    args = build_parser().parse_args(entry[1:] + cmd)  # the image's default command parses
    assert args.cmd == entry[1]
    if kind != "serve":
        assert (ROOT / args.config).is_file()  # the default config is one the image copies
    else:
        assert args.host == "0.0.0.0" and "EXPOSE" in {i["instruction"] for i in dockerfiles[kind].structure}


def test_dockerignore_keeps_the_copied_paths(tmp_path):
    write_dockerfiles(tmp_path)
    lines = (tmp_path / "Dockerfile.train-cpu.dockerignore").read_text().splitlines()
    assert lines[0] == "**" and {f"!{p}" for p in COPIED} <= set(lines)
