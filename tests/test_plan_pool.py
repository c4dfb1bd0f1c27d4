"""Plan runs end to end with fake hosts (tests/plan_sim.py behind the PoolDriver hook):
the real runner, pytest-xdist, PoolScheduling, history, regressions, JUnit and HTML."""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import pytest
import xmlschema

from xenpvh.errors import BlockedError
from xenpvh.history import open_store
from xenpvh.history.regress import Category, classify, exit_code
from xenpvh.plan.pool import ansible_inventory, parse_pool, ssh_config_hosts
from xenpvh.plan.runner import PlanRunner

ROOT = Path(__file__).resolve().parents[1]
FORTY = ROOT / "tests" / "plans" / "forty.toml"
XSD = ROOT / "tests" / "schemas" / "junit-10.xsd"


def _run(tmp_path: Path, sim: dict, *, hosts: str = "h1,h2,h3,h4", plan: Path = FORTY):
    os.environ["XENPVH_PLAN_SIM"] = json.dumps(sim)
    try:
        return PlanRunner(
            plan=str(plan),
            hosts=hosts,
            db=str(tmp_path / "history.sqlite"),
            out_root=tmp_path / "out",
            pytest_args=["-p", "tests.plan_sim"],
            env={"PYTHONPATH": str(ROOT)},
        ).run()
    finally:
        del os.environ["XENPVH_PLAN_SIM"]


def test_forty_points_spread_over_four_hosts_one_breaking(tmp_path: Path) -> None:
    result = _run(tmp_path, {"seconds": 0.25, "break_after": {"h2": 3}})
    assert len(result.results) == 40
    assert all(r.category is Category.PASS for r in result.results), [
        (r.point, r.category, r.note) for r in result.results if r.category is not Category.PASS
    ]
    spread = result.spread()
    print("spread", spread, "passes", result.passes)
    assert sum(spread.values()) == 40
    # h2 decided the two points before it broke and no more; the others took the rest.
    assert spread["h2"] == 2
    assert all(spread[h] >= 10 for h in ("h1", "h3", "h4"))
    with open_store(tmp_path / "history.sqlite") as store:
        runs = store.runs(plan_run_id=result.plan_run.id)
    broken = [r for r in runs if r.verdict == "broken"]
    assert [r.host for r in broken] == ["h2"]
    # The point h2 broke on was decided again, elsewhere.
    again = [r for r in runs if r.point == broken[0].point and r.verdict == "pass"]
    assert again and again[0].host != "h2"
    assert result.exit_code == 0


def test_an_unreachable_host_gives_all_its_points_away(tmp_path: Path) -> None:
    result = _run(tmp_path, {"seconds": 0.1, "unreachable": ["h1"]}, hosts="h1,h2")
    assert result.spread() == {"h2": 40}
    assert result.exit_code == 0
    assert any("h1" in p["broken_hosts"] for p in result.passes)


def test_no_healthy_host_left_is_infrastructure(tmp_path: Path) -> None:
    result = _run(tmp_path, {"seconds": 0.05, "unreachable": ["h1"]}, hosts="h1")
    assert {r.category for r in result.results} == {Category.NOT_RUN}
    assert result.exit_code == 3


def test_a_regression_is_found_the_next_night(tmp_path: Path) -> None:
    plan = tmp_path / "two.toml"
    plan.write_text('name = "two"\n[[matrix]]\nprofile = "linux-pvh"\nvcpus = [1, 4]\n')
    p1 = "linux-pvh.xl.vcpus1.mem256.disks1.vifs1.xen-host.kernel-profile"
    p4 = "linux-pvh.xl.vcpus4.mem256.disks1.vifs1.xen-host.kernel-profile"
    night1 = _run(tmp_path, {"seconds": 0.05, "fail": [p1]}, hosts="h1", plan=plan)
    cats = {r.point: r.category for r in night1.results}
    assert cats == {p1: Category.FAILING_NEW_POINT, p4: Category.PASS}
    assert night1.exit_code == 0  # a point that never passed has not regressed
    night2 = _run(tmp_path, {"seconds": 0.05, "fail": [p4], "flaky": []}, hosts="h1", plan=plan)
    cats = {r.point: r.category for r in night2.results}
    assert cats == {p1: Category.FIXED, p4: Category.NEW_FAILURE}
    assert night2.exit_code == 1
    night3 = _run(tmp_path, {"seconds": 0.05, "fail": [p4], "flaky": [p1]}, hosts="h1", plan=plan)
    cats = {r.point: r.category for r in night3.results}
    assert cats == {p1: Category.FLAKY, p4: Category.STILL_FAILING}
    assert night3.exit_code == 0
    # CI's file validates against the schema; the summary links each night's report.
    schema = xmlschema.XMLSchema(str(XSD))
    junit = night3.files["plan-junit.xml"]
    schema.validate(str(junit))
    assert 'failures="1"' in junit.read_text()
    html = night3.files["summary.html"].read_text()
    assert html.count('<td class="cell ') == 2 * 3  # 2 points x 3 nights
    assert "still-failing" in html and "flaky" in html


def test_summary_escapes_hostile_text(tmp_path: Path) -> None:
    from xenpvh.history.regress import PointResult
    from xenpvh.history.store import PlanRunRecord, RunRecord
    from xenpvh.report.plan_summary import render_plan_html, render_plan_junit

    evil = '<script>alert(1)</script>"\x1b[31m'
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "report.html").write_text("report")
    with open_store(tmp_path / "h.sqlite") as store:
        pr = PlanRunRecord("n1", "p", "b", 1.0)
        store.begin_plan_run(pr)
        run = RunRecord(
            "r1", "pt", "linux-pvh", "fail", evil, 2.0, 3.0, "ap-launch", "n1", "b",
            report=str(tmp_path / "a b" / "report.html"),
        )  # fmt: skip
        store.record_run(run)
        results = [PointResult("pt", Category.NEW_FAILURE, run, run)]
        html = render_plan_html(store, "p", pr, results, tmp_path)
        junit = render_plan_junit("p", pr, results)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "\x1b" not in html and "\x1b" not in junit
    assert 'href="a%20b/report.html"' in html
    xmlschema.XMLSchema(str(XSD)).validate(junit)


def test_classify_table() -> None:
    from xenpvh.history.store import AttemptRow, RunRecord

    def r(v: str, attempts=()) -> RunRecord:
        return RunRecord("x", "p", "linux-pvh", v, "", 0.0, 1.0, attempts=attempts)

    assert classify(r("pass"), None) is Category.PASS
    assert classify(r("pass"), r("fail")) is Category.FIXED
    assert classify(r("fail"), r("pass")) is Category.NEW_FAILURE
    assert classify(r("fail"), r("fail")) is Category.STILL_FAILING
    assert classify(r("fail"), None) is Category.FAILING_NEW_POINT
    assert classify(r("broken"), r("pass")) is Category.INFRASTRUCTURE
    assert classify(r("blocked"), r("pass")) is Category.INFRASTRUCTURE
    flaky = r("pass", (AttemptRow(1, "broken", "x"), AttemptRow(2, "pass", "")))
    assert classify(flaky, r("pass")) is Category.FLAKY
    assert classify(None, r("pass")) is Category.NOT_RUN
    assert exit_code([]) == 0


def test_pool_specs(tmp_path: Path) -> None:
    assert [h.name for h in parse_pool("nested:2")] == ["nested-0", "nested-1"]
    assert [h.spec for h in parse_pool("nested:1")] == ["nested"]
    assert [h.name for h in parse_pool("a, root@b:2222")] == ["a", "root@b:2222"]
    for bad, why in (
        ("nested:0", "nested:N"),
        ("nested:x", "nested:N"),
        ("a,a", "listed twice"),
        ("a;rm -rf /", "not a host name"),
        ("", "empty"),
        ("inventory:/no/such", "inventory /no/such"),
    ):
        with pytest.raises(BlockedError, match=why):
            parse_pool(bad)
    ini = tmp_path / "hosts.ini"
    ini.write_text(
        "# lab\n[xen]\nbox1 ansible_host=10.0.0.1 ansible_user=root\nbox2\n"
        "[xen:vars]\nansible_port=22\n"
    )
    # [xen:vars] count, as they do for ansible.
    assert [(h.name, h.spec) for h in ansible_inventory(ini)] == [
        ("box1", "ssh://root@10.0.0.1:22"),
        ("box2", "ssh://box2:22"),
    ]
    yml = tmp_path / "hosts.yml"
    yml.write_text(
        "all:\n  children:\n    xen:\n      hosts:\n        b3:\n          ansible_port: 2200\n"
    )
    assert [(h.name, h.spec) for h in ansible_inventory(yml)] == [("b3", "ssh://b3:2200")]
    cfg = tmp_path / "config"
    cfg.write_text("Host lab1 lab2\n  User root\nHost *.example !x\nHost lab3\n")
    assert [h.name for h in ssh_config_hosts(cfg)] == ["lab1", "lab2", "lab3"]
    assert collections.Counter(h.name for h in parse_pool(f"ssh-config:{cfg}"))["lab1"] == 1


LAB_INI = """\
# the lab
[web]
web[01:03] ansible_user=ci

[db]
db1 ansible_host=10.0.0.5 ansible_port=2222 ansible_ssh_private_key_file=keys/id_db

[lab:children]
web
db

[lab:vars]
ansible_user=root

[spare]
spare1
"""

LAB_YAML = """\
all:
  children:
    lab:
      vars:
        ansible_user: root
      children:
        web:
          hosts:
            web[01:02]:
              ansible_port: 2200
        db:
          hosts:
            db1:
              ansible_host: 2001:db8::5
              ansible_ssh_private_key_file: /keys/id_db
    spare:
      hosts:
        spare1:
"""


def test_inventory_ranges_children_groups_and_host_vars(tmp_path: Path) -> None:
    ini = tmp_path / "lab.ini"
    ini.write_text(LAB_INI)
    hosts = parse_pool(f"inventory:{ini}:lab")
    # web[01:03] expanded; a host var (ansible_user=ci) beats its group's (lab: root).
    assert [(h.name, h.spec, h.identity) for h in hosts] == [
        ("web01", "ssh://ci@web01", None),
        ("web02", "ssh://ci@web02", None),
        ("web03", "ssh://ci@web03", None),
        ("db1", "ssh://root@10.0.0.5:2222", str(tmp_path / "keys" / "id_db")),
    ]
    assert [h.name for h in parse_pool(f"inventory:{ini}:db")] == ["db1"]
    assert [h.name for h in parse_pool(f"inventory:{ini}")] == [
        "web01", "web02", "web03", "db1", "spare1",
    ]  # fmt: skip
    # The identity reaches the worker through the pass spec.
    assert hosts[3].as_dict()["identity"] == str(tmp_path / "keys" / "id_db")
    assert "identity" not in hosts[0].as_dict()


def test_yaml_inventory_the_same_way(tmp_path: Path) -> None:
    yml = tmp_path / "lab.yml"
    yml.write_text(LAB_YAML)
    hosts = parse_pool(f"inventory:{yml}:lab")
    assert [(h.name, h.spec, h.identity) for h in hosts] == [
        ("web01", "ssh://root@web01:2200", None),
        ("web02", "ssh://root@web02:2200", None),
        ("db1", "ssh://root@[2001:db8::5]", "/keys/id_db"),
    ]


@pytest.mark.parametrize(
    ("name", "text", "hosts", "why"),
    [
        ("lab.ini", LAB_INI, "{f}:nosuch", "no group 'nosuch' (groups: db, lab, spare, web)"),
        ("lab.yml", LAB_YAML, "{f}:nosuch", "no group 'nosuch'"),
        ("bad.ini", "[web\nbox1\n", "{f}", "not an ansible INI or YAML inventory"),
        ("t.ini", '[x]\nb1 ansible_host="{{{{ ip }}}}"\n', "{f}", "ansible_host is a template"),
        ("p.ini", "[x]\nb1 ansible_port=http\n", "{f}", "not a port"),
        ("e.ini", "[x]\nb1\n", "{f}:", "empty group name"),
        ("absent.ini", None, "{f}", "no such file"),
    ],
)
def test_inventory_problems_are_blocked(
    tmp_path: Path, name: str, text: str | None, hosts: str, why: str
) -> None:
    f = tmp_path / name
    if text is not None:
        f.write_text(text)
    with pytest.raises(BlockedError) as ei:
        parse_pool("inventory:" + hosts.format(f=f))
    assert why in str(ei.value)
    assert str(f) in str(ei.value)


def test_ssh_config_hosts_through_paramiko(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    # `Host=` and quoted names are OpenSSH syntax a line split would miss.
    cfg.write_text('Host=lab4\n  User root\nHost "lab5" *.x\n')
    assert [h.name for h in ssh_config_hosts(cfg)] == ["lab4", "lab5"]
    cfg.write_text("Host lab4\nMatch host lab6\n  User x\n")
    with pytest.raises(BlockedError, match="Match blocks"):
        ssh_config_hosts(cfg)
    with pytest.raises(BlockedError, match="does not exist"):
        parse_pool(f"ssh-config:{tmp_path / 'none'}")


def test_prune_keeps_the_newest_nights(tmp_path: Path) -> None:
    from xenpvh.plan.runner import prune_nights

    names = [
        "nightly-20261130-023000-11",
        "nightly-20261201-023000-12",
        "nightly-20261202-023000-13",
        "smoke-20261129-010000-1",
        "nightly-notes",
    ]
    for n in names:
        (tmp_path / n).mkdir()
    gone = prune_nights(tmp_path, "nightly", 2)
    assert [p.name for p in gone] == ["nightly-20261130-023000-11"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])
    with pytest.raises(BlockedError, match="--keep"):
        prune_nights(tmp_path, "nightly", 0)
