"""pytest hooks added to the third-party Python suites by
scripts/clients/python-*.sh: after a failed test every session is closed
(python-pkcs11: the library is finalized and initialized again; PyKCS11:
C_CloseAllSessions), so a test whose setUp failed, and so never closed its
logged-in session, cannot fail the tests after it. Applied alike to our
module and SoftHSM."""

import gc
import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        reset = os.environ.get("MESIGN_SUITE_RESET")
        if reset == "python-pkcs11":
            import pkcs11

            pkcs11.lib(os.environ["PKCS11_MODULE"]).reinitialize()
        elif reset == "PyKCS11":
            import PyKCS11

            lib = PyKCS11.PyKCS11Lib()
            lib.load()
            for slot in lib.getSlotList():
                lib.closeAllSessions(slot)
            # The suite counts loaded libraries; drop our reference now.
            del lib
            gc.collect()
