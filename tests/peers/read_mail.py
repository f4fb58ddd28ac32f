#!/usr/bin/env python3
"""Prints every message in a Maildir as one JSON line: headers, bodies and attachments (with sha256),
parsed by Python's email package so the Rust test checks what a real mail reader sees."""
import hashlib
import json
import mailbox
import sys
from email import policy
from email.parser import BytesParser

for key, msg in sorted(mailbox.Maildir(sys.argv[1], create=False).items()):
    m = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    out = {
        "subject": str(m["subject"]),
        "from": str(m["from"]),
        "to": str(m["to"]),
        "message_id": str(m["message-id"]),
        "text": None,
        "html": None,
        "attachments": [],
    }
    for part in m.walk():
        if part.is_multipart():
            continue
        data = part.get_payload(decode=True) or b""
        if part.get_filename():
            out["attachments"].append(
                {
                    "filename": part.get_filename(),
                    "content_type": part.get_content_type(),
                    "size": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                }
            )
        elif part.get_content_type() == "text/plain":
            out["text"] = part.get_content()
        elif part.get_content_type() == "text/html":
            out["html"] = part.get_content()
    print(json.dumps(out, ensure_ascii=False))
