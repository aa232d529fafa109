"""Prints one `TESTCASE: <outcome> <id> <message>` line per test case of
JUnit XML files written by pytest (outcome: passed, failed, skipped; the
message is the failure's first line), for scripts/clients/python-*.sh and
the Rust test comparing our module with SoftHSM."""

import sys
import xml.etree.ElementTree as ET

for path in sys.argv[1:]:
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}.{case.get('name')}"
        message = ""
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is not None:
            outcome = "failed"
            message = (problem.get("message") or "").splitlines()[0:1]
            message = message[0] if message else ""
        elif case.find("skipped") is not None:
            outcome = "skipped"
            message = (case.find("skipped").get("message") or "").splitlines()[0:1]
            message = message[0] if message else ""
        else:
            outcome = "passed"
        print(f"TESTCASE: {outcome} {name} {message}".rstrip())
