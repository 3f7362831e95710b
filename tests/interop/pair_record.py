"""A pair record kept by usbmuxd, read and written as any client does (ReadPairRecord,
SavePairRecord): `pair_record.py ADDR read UDID FILE`, `... write UDID FILE`, and
`... cert-versions UDID` (the X.509 version of its host and device certificates, via openssl).
Standard library only; usbmuxd at HOST:PORT."""
import plistlib
import socket
import struct
import subprocess
import sys


def request(addr, message):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        body = plistlib.dumps(message)
        s.sendall(struct.pack("<IIII", 16 + len(body), 1, 8, 1) + body)
        head = s.recv(16, socket.MSG_WAITALL)
        return plistlib.loads(s.recv(struct.unpack("<I", head[:4])[0] - 16, socket.MSG_WAITALL))


def read(addr, udid):
    reply = request(addr, {"MessageType": "ReadPairRecord", "PairRecordID": udid})
    return reply["PairRecordData"]


def main():
    addr, command, udid = sys.argv[1:4]
    if command == "read":
        with open(sys.argv[4], "wb") as f:
            f.write(read(addr, udid))
    elif command == "write":
        with open(sys.argv[4], "rb") as f:
            data = f.read()
        reply = request(addr, {"MessageType": "SavePairRecord", "PairRecordID": udid,
                               "PairRecordData": data})
        sys.exit(reply.get("Number", 1))
    elif command == "cert-versions":
        record = plistlib.loads(read(addr, udid))
        for key in ("HostCertificate", "DeviceCertificate"):
            text = subprocess.run(["openssl", "x509", "-noout", "-text"], input=record[key],
                                  capture_output=True, check=True).stdout.decode()
            version = [l.strip() for l in text.splitlines() if l.strip().startswith("Version:")]
            print(key, version[0])
    else:
        sys.exit(f"unknown command {command}")


main()
