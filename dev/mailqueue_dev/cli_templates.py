"""``mailqueue templates …``: save, read, list, delete and preview stored templates.

A template is saved from files (``--text-file``, ``--html-file``) or text (``--subject``); each save is
a new version. A preview renders a template with data through the API without sending, and can be
written as an ``.eml`` file to open in a mail client.
"""

from __future__ import annotations

import argparse
import json
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mailqueue_dev.cli import EXIT_OK, EXIT_USAGE, Api, Failure, Output


def load_data(value: str | None) -> dict[str, Any]:
    """``--data``: a JSON object, or ``@FILE`` holding one."""
    if value is None:
        return {}
    text = value
    if value.startswith("@"):
        try:
            text = Path(value[1:]).read_text(encoding="utf-8")
        except OSError as error:
            raise Failure(EXIT_USAGE, f"cannot read {value[1:]}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise Failure(EXIT_USAGE, f"--data is not JSON: {error}") from None
    if not isinstance(data, dict):
        raise Failure(EXIT_USAGE, "--data must be a JSON object")
    return data


def _read(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise Failure(EXIT_USAGE, f"{flag} {path}: {error.strerror}") from None


def _path(name: str) -> str:
    return f"/templates/{quote(name, safe='')}"


def cmd_put(api: Api, args: argparse.Namespace, output: Output) -> int:
    body: dict[str, Any] = {"subject": args.subject}
    text, html = _read(args.text_file, "--text-file"), _read(args.html_file, "--html-file")
    if text is None and html is None:
        raise Failure(EXIT_USAGE, "templates put needs --text-file, --html-file or both")
    if text is not None:
        body["text"] = text
    if html is not None:
        body["html"] = html
    if args.inline_css:
        body["inline_css"] = True
    saved = api.call("PUT", _path(args.name), body).body
    if output.as_json:
        output.json(saved)
    else:
        output.line(f"{saved['name']}  version {saved['version']}")
    return EXIT_OK


def cmd_get(api: Api, args: argparse.Namespace, output: Output) -> int:
    template = api.call("GET", _path(args.name), query={"version": args.version}).body
    if output.as_json:
        output.json(template)
        return EXIT_OK
    output.line(f"{template['name']}  version {template['version']}  saved {template['created_at']}")
    output.line(f"subject: {template['subject']}")
    for part in ("text", "html"):
        if template.get(part) is not None:
            output.line(f"--- {part}")
            output.line(template[part].rstrip("\n"))
    return EXIT_OK


def cmd_list(api: Api, args: argparse.Namespace, output: Output) -> int:
    page = api.call("GET", "/templates", query={"limit": args.limit, "cursor": args.cursor}).body
    if output.as_json:
        output.json(page)
        return EXIT_OK
    rows = [(t["name"], t["latest_version"], t["updated_at"]) for t in page["templates"]]
    if rows:
        output.table(("NAME", "VERSION", "UPDATED"), rows)
    else:
        output.note("no templates")
    if page.get("cursor"):
        output.note(f"more: mailqueue templates list --cursor {page['cursor']}")
    return EXIT_OK


def cmd_delete(api: Api, args: argparse.Namespace, output: Output) -> int:
    api.call("DELETE", _path(args.name))
    if output.as_json:
        output.json({"deleted": args.name})
    else:
        output.line(f"{args.name}  deleted")
    return EXIT_OK


def preview_message(preview: dict[str, Any], sender: str | None, to: str | None) -> EmailMessage:
    """The preview as a MIME message, text and HTML as alternatives, to open in a mail client."""
    message = EmailMessage(policy=policy.SMTP)
    if sender:
        message["From"] = sender
    if to:
        message["To"] = to
    message["Subject"] = preview["subject"]
    message["X-Mailqueue-Template"] = f"{preview['template']} version {preview['template_version']}"
    text, html = preview.get("text"), preview.get("html")
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    elif html is not None:
        message.set_content(html, subtype="html")
    return message


def cmd_preview(api: Api, args: argparse.Namespace, output: Output) -> int:
    body: dict[str, Any] = {"data": load_data(args.data)}
    if args.version is not None:
        body["version"] = args.version
    preview = api.call("POST", f"{_path(args.name)}/preview", body).body
    if args.eml:
        Path(args.eml).write_bytes(preview_message(preview, args.sender, args.to).as_bytes())
        output.note(f"wrote {args.eml}")
    if output.as_json:
        output.json(preview)
        return EXIT_OK
    output.line(f"subject: {preview['subject']}")
    for part in ("text", "html"):
        if preview.get(part) is not None:
            output.line(f"--- {part}")
            output.line(preview[part].rstrip("\n"))
    return EXIT_OK


def add_commands(commands: Any, common: argparse.ArgumentParser, page_size: Any) -> None:
    """The ``templates`` command and its subcommands, under the CLI's ``commands``."""
    templates = commands.add_parser("templates", parents=[common], help="stored templates: put, get, list, delete")
    sub = templates.add_subparsers(dest="templates_command", required=True, metavar="ACTION")

    put = sub.add_parser("put", parents=[common], help="save a template (each save is a new version)")
    put.add_argument("name", help="a slug: a-z, 0-9, '-' and '_'")
    put.add_argument("--subject", required=True, help="the subject template, e.g. 'Welcome, {{ name }}'")
    put.add_argument("--text-file", metavar="FILE", help="the plain-text template")
    put.add_argument("--html-file", metavar="FILE", help="the HTML template")
    put.add_argument("--inline-css", action="store_true", help="copy <style> rules into style attributes")
    put.set_defaults(run=cmd_put)

    get = sub.add_parser("get", parents=[common], help="a template's latest version, or --version N")
    get.add_argument("name")
    get.add_argument("--version", type=int)
    get.set_defaults(run=cmd_get)

    listing = sub.add_parser("list", parents=[common], help="templates by name")
    listing.add_argument("--limit", type=page_size, default=50, metavar="1-100")
    listing.add_argument("--cursor")
    listing.set_defaults(run=cmd_list)

    delete = sub.add_parser("delete", parents=[common], help="delete a template and all its versions")
    delete.add_argument("name")
    delete.set_defaults(run=cmd_delete)

    preview = sub.add_parser("preview", parents=[common], help="render a template with data, without sending")
    preview.add_argument("name")
    preview.add_argument("--data", metavar="JSON", help="the variables, as JSON or @FILE")
    preview.add_argument("--version", type=int)
    preview.add_argument("--eml", metavar="FILE", help="also write the preview as an .eml file")
    preview.add_argument("--from", dest="sender", metavar="ADDRESS", help="the From of the .eml")
    preview.add_argument("--to", metavar="ADDRESS", help="the To of the .eml")
    preview.set_defaults(run=cmd_preview)
