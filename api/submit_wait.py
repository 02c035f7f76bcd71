"""A submit that waits for its job: `POST /jobs/...?wait=S` answers with the outcome.

For callers that want the result and nothing else (a script, a notebook, a
pipeline step): one request instead of a submit and a long-poll. The submit
runs as ever (its 202 is built, its database session closed, its job sent to
the workers); then, instead of sending the 202, the request waits for the job's
end, as `GET /jobs/{id}?wait=S` would, and answers:

- the job ended within S seconds: 200 with the Job in its final state, and, if
  it succeeded, its result in the field `result` (the body of
  `GET /jobs/{id}/result`);
- otherwise: the 202 with the Job as it was accepted; the client goes on with
  `links.result` and `?wait=`.

The wait holds no database connection and no thread (the long-poll's watch,
woken by the message that ends the job), and spares the caller's second
request its parsing, its authentication and its first read of the job.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Query, Request, Response

from api.multipart import ContentTypeRoute

WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        description="Seconds to wait for the job to end (capped at MAX_WAIT_S): a job that "
        "ends in time is answered with 200, its final state and, if it succeeded, its "
        "`result`; otherwise with the usual 202.",
    ),
]

# (request, the accepted submit's 202, seconds to wait) -> the answer
Answer = Callable[[Request, Response, float], Coroutine[Any, Any, Response]]
_ANSWER = "__answer_when_ended__"


def waits_for_end(answer: Answer) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Mark a submit endpoint: with `?wait=S`, its 202 is handed to `answer`."""

    def mark(endpoint: Callable[..., Any]) -> Callable[..., Any]:
        setattr(endpoint, _ANSWER, answer)
        return endpoint

    return mark


class WaitingRoute(ContentTypeRoute):
    """A route whose marked submit endpoint (JSON or upload) may wait for its job's end."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        answer: Answer | None = getattr(self.endpoint, _ANSWER, None)
        if answer is None:
            return handler

        async def handle(request: Request) -> Response:
            response = await handler(request)
            # Validated by the endpoint's own `wait` parameter before the submit ran.
            wait = float(request.query_params.get("wait") or 0)
            if wait <= 0 or response.status_code != 202:
                return response
            return await answer(request, response, wait)

        return handle
