"""The API's template routes: save, read, list, delete and preview stored templates.

Routes only; the work is in mailqueue.templates. Included into the API's resolver by api.py, whose
exception handlers give every error here the API's one error shape.
"""

from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from mailqueue.models import ErrorResponse
from mailqueue.template_models import (
    TEMPLATE_NAME_PATTERN,
    Preview,
    PreviewRequest,
    TemplateList,
    TemplateRequest,
    TemplateView,
)
from mailqueue.templates import TemplateLibrary

_ERRORS: dict[int, Any] = {
    status: {"description": text, "content": {"application/json": {"model": ErrorResponse}}}
    for status, text in {
        400: "Malformed request",
        404: "No such template or version",
        409: "Another save of the same template got there first; send it again",
        413: "Body too large",
        415: "Body is not JSON",
        422: "The template, its name or the data is not valid",
        503: "Storage unreachable: nothing was changed, send it again",
    }.items()
}


def _answers(status: int, description: str, model: Any = None) -> dict[int, Any]:
    # No model, no body: an empty content map keeps Powertools from documenting a JSON null.
    success: dict[str, Any] = {"description": description, "content": {}}
    if model is not None:
        success["content"] = {"application/json": {"model": model}}
    return {status: success, **_ERRORS}


Name = Annotated[str, Path(pattern=TEMPLATE_NAME_PATTERN, description="The template's name, a slug.")]


def template_router(library: TemplateLibrary) -> APIGatewayHttpRouter:
    """The template routes, working on ``library``."""
    router = APIGatewayHttpRouter()  # type: ignore[no-untyped-call]

    @router.put(
        "/templates/<name>",
        responses=_answers(201, "Saved as a new version", TemplateView),
        summary="Save a template (a new version each time)",
    )
    def put_template(name: Name, template: Annotated[TemplateRequest, Body()]) -> Response[TemplateView]:
        return _json(HTTPStatus.CREATED, library.put(name, template).model_dump())

    @router.get(
        "/templates/<name>",
        responses=_answers(200, "The template", TemplateView),
        summary="A template's latest version",
    )
    def get_template(
        name: Name,
        version: Annotated[int | None, Query(ge=1, description="A version; the latest when left out.")] = None,
    ) -> TemplateView:
        return library.get(name, version)

    @router.get("/templates", responses=_answers(200, "A page of templates", TemplateList), summary="Templates by name")
    def list_templates(
        limit: Annotated[int, Query(ge=1, le=100)] = 50,
        cursor: Annotated[str | None, Query(max_length=200)] = None,
    ) -> TemplateList:
        return library.page(limit, cursor)

    @router.delete(
        "/templates/<name>", responses=_answers(204, "Deleted"), summary="Delete a template and all its versions"
    )
    def delete_template(name: Name) -> Response[None]:
        library.delete(name)
        return Response(status_code=HTTPStatus.NO_CONTENT.value, content_type=None, body=None)

    @router.post(
        "/templates/<name>/preview",
        responses=_answers(200, "Rendered; nothing was sent", Preview),
        summary="Render a template with data, without sending",
    )
    def preview_template(name: Name, request: Annotated[PreviewRequest, Body()]) -> Preview:
        return library.preview(name, request.data, request.version)

    return router


def _json(status: HTTPStatus, body: Any) -> Response[Any]:
    return Response(status_code=status.value, content_type=content_types.APPLICATION_JSON, body=body)
