"""Apache Kafka's own command-line tools for tests: ``kafka-consumer-groups`` (class
``org.apache.kafka.tools.consumer.group.ConsumerGroupCommand`` of the ``kafka-tools`` artifact, which the
broker's classpath does not have), resolved once by Maven into the session-tally cache next to the
broker's jars, at the broker's version (the pom below; the same Maven repository as the broker).

Without java or mvn the tests that need it fail under CI=true and skip elsewhere."""

from __future__ import annotations

import shutil
import subprocess

from session_tally.localsvc.proc import cache_dir, file_lock
from tests.needs import unavailable

VERSION = "4.4.0"
GROUP_COMMAND = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"
POM = f"""<project>
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.session-tally</groupId>
  <artifactId>kafka-tools-for-tests</artifactId>
  <version>0</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{VERSION}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-nop</artifactId><version>1.7.36</version></dependency>
  </dependencies>
  <build><plugins><plugin>
    <groupId>org.apache.maven.plugins</groupId><artifactId>maven-dependency-plugin</artifactId><version>3.8.1</version>
  </plugin></plugins></build>
</project>
"""


def tools_classpath() -> str:
    """``<cache>/kafka-tools-<version>/lib/*``, resolved on first use (about 25 s with a warm ~/.m2)."""
    java, mvn = shutil.which("java"), shutil.which("mvn")
    if java is None or mvn is None:
        unavailable("Kafka's tools need java and mvn on PATH (Debian: openjdk-17-jre-headless, maven)")
    home = cache_dir() / f"kafka-tools-{VERSION}"
    lib = home / "lib"
    marker = lib / ".resolved"
    if not marker.is_file():
        with file_lock(home / ".lock"):
            if not marker.is_file():
                home.mkdir(parents=True, exist_ok=True)
                (home / "pom.xml").write_text(POM)
                staging = home / "lib.partial"
                shutil.rmtree(staging, ignore_errors=True)
                done = subprocess.run(
                    [str(mvn), "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
                     f"-DoutputDirectory={staging}"],
                    capture_output=True, text=True, timeout=900, check=False, cwd=home,
                )  # fmt: skip
                if done.returncode != 0 or not list(staging.glob("kafka-tools-*.jar")):
                    unavailable(f"cannot resolve kafka-tools {VERSION} with Maven: {done.stdout[-500:]}")
                (staging / ".resolved").write_text(VERSION + "\n")
                shutil.rmtree(lib, ignore_errors=True)
                staging.rename(lib)
    return str(lib / "*")


def consumer_groups(bootstrap: str, *args: str) -> str:
    """``kafka-consumer-groups --bootstrap-server BOOTSTRAP ARGS``; its standard output (asserts exit 0)."""
    java = shutil.which("java")
    assert java is not None
    done = subprocess.run(
        [java, "-Xmx256m", "-cp", tools_classpath(), GROUP_COMMAND, "--bootstrap-server", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"kafka-consumer-groups {' '.join(args)}: {done.returncode}\n{done.stderr[-2000:]}"
    return done.stdout


def reset_offsets(bootstrap: str, group: str, topic: str, where: str) -> str:
    """What an operator runs: ``--reset-offsets --to-earliest|--to-latest --execute`` for one group and
    topic (the group must have no live member). Returns the tool's table (group, topic, partition,
    new offset)."""
    return consumer_groups(bootstrap, "--group", group, "--topic", topic, "--reset-offsets", where, "--execute")


def committed(table: str) -> dict[int, int]:
    """partition -> new offset from the table ``reset_offsets`` prints."""
    out: dict[int, int] = {}
    for line in table.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[2].isdigit() and parts[3].isdigit():
            out[int(parts[2])] = int(parts[3])
    return out
