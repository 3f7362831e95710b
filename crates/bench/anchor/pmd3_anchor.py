"""The benchmark's anchor: pymobiledevice3 (11.45.0) used as a library in one Python process,
driving the sequence the station runs on each iPad: pair, supervise with a cloud configuration
that names the MDM enrollment URL, escalate + silent Wi-Fi profile install (one MCInstall
connection, as pymobiledevice3 does it), rename.

Usage: python pmd3_anchor.py KEYBAG_PEM NAME_PREFIX UDID...
with USBMUXD_SOCKET_ADDRESS pointing at the simulator. Prints one JSON object:
{"ipads": [{"udid", "wall_ms", "cpu_ms"}...]} on stdout. Python starts once; the keybag and
imports are ready before the first iPad, so only the per-iPad work is timed.
"""

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from uuid import uuid4

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from pymobiledevice3.ca import create_keybag_file
from pymobiledevice3.lockdown import create_using_usbmux
from pymobiledevice3.services.mobile_config import MobileConfigService

MDM_URL = "https://mdm.example.org/enroll/springfield"
ORG = "Springfield Elementary"


def cloud_configuration(keybag: Path) -> dict:
    cert = x509.load_pem_x509_certificate(keybag.read_bytes()).public_bytes(Encoding.DER)
    # What MobileConfigService.supervise sends, with the MDM enrollment URL the station sends.
    return {
        "AllowPairing": True,
        "CloudConfigurationUIComplete": True,
        "ConfigurationSource": 2,
        "ConfigurationWasApplied": True,
        "ConfigurationURL": MDM_URL,
        "IsMDMUnremovable": False,
        "IsMandatory": True,
        "IsMultiUser": False,
        "IsSupervised": True,
        "OrganizationMagic": str(uuid4()),
        "OrganizationName": ORG,
        "PostSetupProfileWasInstalled": True,
        "SkipSetup": ["All"],
        "SupervisorHostCertificates": [cert],
    }


async def prepare(udid: str, keybag: Path, name: str, records: Path) -> None:
    lockdown = await create_using_usbmux(
        serial=udid, autopair=True, pairing_records_cache_folder=records
    )
    try:
        async with MobileConfigService(lockdown) as mc:
            await mc.set_cloud_configuration(cloud_configuration(keybag))
            await mc.install_wifi_profile(
                "WPA2", "Springfield-Students", "correct horse battery staple", keybag_file=keybag
            )
        await lockdown.set_value(name, key="DeviceName")
    finally:
        await lockdown.close()


async def main() -> None:
    keybag = Path(sys.argv[1])
    if not keybag.exists():
        create_keybag_file(keybag, ORG)
    prefix = sys.argv[2]
    udids = sys.argv[3:]
    out = []
    with tempfile.TemporaryDirectory() as records:
        for n, udid in enumerate(udids, 1):
            w0, c0 = time.perf_counter_ns(), time.process_time_ns()
            await prepare(udid, keybag, f"{prefix} {n:02}", Path(records))
            w1, c1 = time.perf_counter_ns(), time.process_time_ns()
            out.append({"udid": udid, "wall_ms": (w1 - w0) / 1e6, "cpu_ms": (c1 - c0) / 1e6})
    json.dump({"ipads": out}, sys.stdout)


if __name__ == "__main__":
    asyncio.run(main())
