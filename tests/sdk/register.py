"""Registers devices against the loadtest DPS emulator with Azure's Python device SDK, unpatched.

Usage: register.py CA_PEM ID_SCOPE GROUP_KEY
Each line of stdin is one case: `REGISTRATION_ID [KEY_OVERRIDE|-] [PAYLOAD_JSON]`.
Prints one JSON line per case: {"id", "status", "hub", "device_id", "payload", "error"}.
The SDK connects to localhost:8883 over TLS (its port is fixed) and trusts only CA_PEM.

With LOADTEST_SDK_WEBSOCKETS_PORT=N the SDK registers over MQTT over WebSockets
(`websockets=True`: wss://localhost:443/$iothub/websocket, subprotocol mqtt). Its port 443 is
fixed too; so that the test needs neither root nor port 443, paho's `Client.connect` (the socket
the SDK opens) is wrapped to dial port N instead of 443. Nothing else in the SDK or paho changes:
the TLS, the upgrade request and the MQTT session are theirs.
"""

import base64
import hashlib
import hmac
import json
import os
import sys

from azure.iot.device import ProvisioningDeviceClient


def derive(group_key: str, registration_id: str) -> str:
    key = base64.b64decode(group_key)
    return base64.b64encode(hmac.new(key, registration_id.encode(), hashlib.sha256).digest()).decode()


def redirect_websocket_port(port: int) -> None:
    import paho.mqtt.client as paho

    original = paho.Client.connect

    def connect(self, *args, **kwargs):
        args = list(args)
        if kwargs.get("port") == 443:
            kwargs["port"] = port
        elif len(args) > 1 and args[1] == 443:
            args[1] = port
        return original(self, *args, **kwargs)

    paho.Client.connect = connect


def main() -> None:
    ca_pem, id_scope, group_key = sys.argv[1:4]
    ws_port = os.environ.get("LOADTEST_SDK_WEBSOCKETS_PORT")
    if ws_port:
        redirect_websocket_port(int(ws_port))
    ca = open(ca_pem).read()
    for line in sys.stdin:
        parts = line.strip().split(" ", 2)
        if not parts or not parts[0]:
            continue
        reg_id = parts[0]
        key = parts[1] if len(parts) > 1 and parts[1] != "-" else derive(group_key, reg_id)
        payload = json.loads(parts[2]) if len(parts) > 2 else None
        client = ProvisioningDeviceClient.create_from_symmetric_key(
            provisioning_host="localhost",
            registration_id=reg_id,
            id_scope=id_scope,
            symmetric_key=key,
            server_verification_cert=ca,
            websockets=bool(ws_port),
        )
        if payload is not None:
            client.provisioning_payload = payload
        out = {"id": reg_id}
        try:
            result = client.register()
            state = result.registration_state
            out.update(
                status=result.status,
                hub=state.assigned_hub if state else None,
                device_id=state.device_id if state else None,
                payload=state.response_payload if state else None,
                substatus=state.sub_status if state else None,
            )
        except Exception as e:  # the SDK raises on failed/disabled/refused
            chain, cause = [], e
            while cause is not None:
                chain.append(f"{type(cause).__name__}: {cause}")
                cause = cause.__cause__ or cause.__context__
            out.update(status="error", error=" <- ".join(chain))
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
