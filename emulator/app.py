"""Routes of the TabPFN cloud emulator, speaking the wire protocol of tabpfn-client 0.6.1."""

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import ceil
from typing import Annotated, Any
from uuid import UUID

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from tabpfn_client.api_models import (
    ClassifierConfig,
    DuplicateTestSetErrorResponse,
    DuplicateTrainSetErrorResponse,
    EstimateCostRequest,
    EstimateCostResponse,
    FileInfo,
    FileUploadInfo,
    FitRequest,
    FitResponse,
    FitStatus,
    GetFitStatusRequest,
    GetFitStatusResponse,
    NotFoundErrorResponse,
    PredictRequest,
    PrepareTestSetUploadRequest,
    PrepareTestSetUploadResponse,
    PrepareTrainSetUploadRequest,
    PrepareTrainSetUploadResponse,
    QuotaOperation,
    RegressorConfig,
    SubmitFitJobRequest,
    SubmitFitJobResponse,
)

from emulator import jobs
from emulator.accounts import Account, AccountStore, FittedModel, Upload, account_name
from emulator.calllog import CallLog
from emulator.config import EmulatorConfig
from emulator.errors import ApiError, install_error_handlers
from emulator.limits import (
    DATASET_MAX_SIZE_BYTES,
    DEFAULT_MODEL_VERSION,
    model_limit,
    settings_response,
)
from emulator.rate_windows import RateWindows, WindowFull
from emulator.signing import UploadTarget, UrlSigner
from emulator.standin import STANDIN_LABEL, StandInError, parquet_shape
from emulator.stats import CallStats, path_kind
from emulator.token_pools import PoolEmpty, TokenPools, predict_cost

STORAGE_PREFIX = "/_storage/"
# GCS signs the content type into its URLs; the client echoes `required_headers`.
UPLOAD_HEADERS = {"Content-Type": "application/octet-stream"}
MAX_CHUNKS = 32
# The calls a hung upstream stalls on (EMULATOR_HANG_S): the long-running ones.
HANGING_PATHS = frozenset({"/tabpfn/fit", "/tabpfn/submit_fit_job", "/tabpfn/predict"})
# How often a hung call looks at EMULATOR_HANG_S again (see _hang).
_HANG_CHECK_S = 0.1


@dataclass
class Emulator:
    config: EmulatorConfig
    store: AccountStore
    signer: UrlSigner = field(default_factory=UrlSigner)
    calls: CallLog = field(default_factory=CallLog)
    rate_windows: RateWindows = field(default_factory=RateWindows)
    pools: TokenPools = field(default_factory=TokenPools)
    stats: CallStats = field(default_factory=CallStats)


# Dependencies and light routes are `async def`: each sync one costs a hop to a
# worker thread and back (about 0.3 ms of CPU), and the stand-in upstream should
# cost the machine almost nothing. Fit and predict stay sync: the forest stand-in
# computes, and must not hold up the event loop.
async def _emulator(request: Request) -> Emulator:
    return request.app.state.emulator


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


async def _account(request: Request, emu: Annotated[Emulator, Depends(_emulator)]) -> Account:
    token = _bearer(request)
    account = emu.store.authenticate(token)
    if account is None:
        reason = "Invalid bearer token." if token else "Missing bearer token."
        raise ApiError.message(401, reason)
    if token in emu.config.revoked_tokens:
        raise ApiError.message(401, "This token has been revoked.")
    return account


def _flaky(emu: Emulator) -> None:
    # Called after authentication: a real server rejects a bad token before any
    # work can fail.
    if emu.config.error_rate and random.random() < emu.config.error_rate:
        raise ApiError.message(503, "Emulated transient failure (EMULATOR_ERROR_RATE).")


def _window_full(full: WindowFull) -> ApiError:
    # The client drops headers, so the seconds are in the message too, as a
    # caller reading only tabpfn-client's RuntimeError needs them.
    seconds = full.retry_after_header
    return ApiError(
        429,
        {
            "message": f"Rate limit exceeded for {full.kind} requests: {full.limit} per "
            f"{full.window}. Retry after {seconds} seconds",
            "error_code": "RATE_LIMIT_EXCEEDED",
            "request_type": full.kind,
            "window": full.window,
            "limit": full.limit,
            "retry_after": seconds,
        },
        headers={"Retry-After": str(seconds)},
    )


def _metered(kind: str) -> Callable[..., Account]:
    """A dependency: authenticate, count the call in its kind's rate windows, maybe fail."""

    async def dependency(
        account: Annotated[Account, Depends(_account)],
        emu: Annotated[Emulator, Depends(_emulator)],
    ) -> Account:
        config = emu.config
        if config.rate_limits:
            full = emu.rate_windows.admit(
                account.name,
                kind,
                config.rate_limits_of(kind),
                config.rate_window_scale,
                time.time(),
                on_the_clock=config.rate_window_start == "clock",
            )
            if full is not None:
                raise _window_full(full)
        _flaky(emu)
        return account

    return dependency


EmuDep = Annotated[Emulator, Depends(_emulator)]
AccountDep = Annotated[Account, Depends(_account)]
FitAccountDep = Annotated[Account, Depends(_metered("fit"))]
PredictAccountDep = Annotated[Account, Depends(_metered("predict"))]
UploadAccountDep = Annotated[Account, Depends(_metered("upload"))]

router = APIRouter()


def _json(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", exclude_none=True), status_code=status_code)


def _not_found(message: str) -> ApiError:
    return ApiError(404, NotFoundErrorResponse(message=message))


def _n_chunks(info: FileInfo, chunk_bytes: int) -> int:
    if not info.use_chunks or not info.size_bytes:
        return 1
    return max(1, min(MAX_CHUNKS, ceil(info.size_bytes / chunk_bytes)))


def _check_file_info(name: str, info: FileInfo) -> None:
    if info.format != "parquet":
        raise ApiError.message(400, f"{name}: only the parquet format is supported.")
    if info.size_bytes is not None and info.size_bytes > DATASET_MAX_SIZE_BYTES:
        raise ApiError.message(
            413, f"{name} is {info.size_bytes} bytes, above the limit of {DATASET_MAX_SIZE_BYTES}."
        )


def _upload_info(
    request: Request, emu: Emulator, account: Account, upload: Upload, file: str
) -> FileUploadInfo:
    urls, expires_at = [], 0.0
    for chunk in range(len(upload.files[file].chunks)):
        target = UploadTarget(account=account.name, upload_id=upload.id, file=file, chunk=chunk)
        url, expires_at = emu.signer.sign(
            str(request.base_url), target, emu.config.signed_url_ttl_s
        )
        urls.append(url)
    return FileUploadInfo(
        signed_urls=urls, expires_at=expires_at, required_headers=dict(UPLOAD_HEADERS)
    )


def _complete_upload(emu: Emulator, account: Account, upload_id: UUID, kind: str) -> Upload:
    upload = emu.store.get_upload(account, upload_id)
    if upload is None or upload.kind != kind:
        raise _not_found(f"{kind.capitalize()} set upload {upload_id} was not found.")
    missing = [
        f"{name} chunk {i}"
        for name, stored in upload.files.items()
        for i, chunk in enumerate(stored.chunks)
        if chunk is None
    ]
    if missing:
        raise ApiError.message(
            400, f"{kind.capitalize()} set upload {upload_id} is incomplete: missing {missing}."
        )
    return upload


def _fitted_model(emu: Emulator, account: Account, model_id: UUID) -> FittedModel:
    model = emu.store.get_model(account, model_id)
    if model is None:
        raise _not_found(f"Fitted train set {model_id} was not found.")
    return model


def _start_fit(
    emu: Emulator,
    account: Account,
    req: FitRequest | SubmitFitJobRequest,
    background: bool,
) -> FittedModel:
    upload = _complete_upload(emu, account, req.train_set_upload_id, "train")
    x_bytes, y_bytes = upload.files["x_train"].data(), upload.files["y_train"].data()
    now = time.time()
    model = FittedModel(
        id=uuid.uuid4(),
        upload_id=upload.id,
        task=str(req.task_config.task.value),
        submitted_at=now,
        ready_at=now + (emu.config.async_fit_delay_s if background else 0.0),
    )
    tabpfn_config = req.task_config.tabpfn_config
    if background:
        emu.store.add_model(account, model)
        jobs.train_in_background(
            model, x_bytes, y_bytes, tabpfn_config, model_limit(emu.config), emu.config.model
        )
        return model
    jobs.train(model, x_bytes, y_bytes, tabpfn_config, model_limit(emu.config), emu.config.model)
    if model.error:
        raise ApiError.message(400, model.error)
    emu.store.add_model(account, model)
    return model


@router.get("/")
async def root() -> dict[str, str]:
    return {"message": f"TabPFN cloud emulator. Predictions come from {STANDIN_LABEL}."}


@router.get("/protected/")
async def protected(account: AccountDep) -> dict[str, str]:
    return {"message": "Authenticated.", "account": account.name}


@router.get("/retrieve_greeting_messages/")
async def greeting_messages() -> dict[str, list[str]]:
    return {"messages": []}


@router.get("/tabpfn/get_settings")
async def get_settings(emu: EmuDep) -> JSONResponse:
    return _json(settings_response(emu.config))


@router.post("/tabpfn/prepare_train_set_upload")
async def prepare_train_set_upload(
    req: PrepareTrainSetUploadRequest, request: Request, emu: EmuDep, account: UploadAccountDep
) -> JSONResponse:
    _check_file_info("x_train", req.x_train_info)
    _check_file_info("y_train", req.y_train_info)
    x_hash, y_hash = req.x_train_info.hash, req.y_train_info.hash
    dedup_key = ("train", x_hash, y_hash) if x_hash and y_hash else None
    if dedup_key and not req.force_reupload:
        duplicate = emu.store.find_duplicate(account, dedup_key)
        if duplicate is not None:
            body = DuplicateTrainSetErrorResponse(
                message="This train set was already uploaded.", train_set_upload_id=duplicate.id
            )
            return _json(body, status_code=409)
    chunk_bytes = emu.config.upload_chunk_bytes
    upload = emu.store.create_upload(
        account,
        "train",
        {
            "x_train": (x_hash, _n_chunks(req.x_train_info, chunk_bytes)),
            "y_train": (y_hash, _n_chunks(req.y_train_info, chunk_bytes)),
        },
        dedup_key,
    )
    return _json(
        PrepareTrainSetUploadResponse(
            train_set_upload_id=upload.id,
            x_train_info=_upload_info(request, emu, account, upload, "x_train"),
            y_train_info=_upload_info(request, emu, account, upload, "y_train"),
        )
    )


@router.put(STORAGE_PREFIX + "{upload_id}/{file}/{chunk}", include_in_schema=False)
async def put_signed(
    upload_id: UUID,
    file: str,
    chunk: int,
    account: str,
    expires: int,
    sig: str,
    request: Request,
    emu: EmuDep,
) -> Response:
    target = UploadTarget(account=account, upload_id=upload_id, file=file, chunk=chunk)
    refusal = emu.signer.verify(target, expires, sig)
    if refusal == "ExpiredToken":
        raise ApiError.message(400, "ExpiredToken: the signed URL has expired.")
    if refusal:
        raise ApiError.message(403, f"{refusal}: the signed URL is not valid.")
    # Only a verified URL names the account the upload belongs to.
    request.state.upload_account = account
    for name, value in UPLOAD_HEADERS.items():
        if request.headers.get(name) != value:
            raise ApiError.message(403, f"MissingRequiredHeader: {name}: {value} is required.")
    owner = emu.store.by_name(account)
    data = await request.body()
    if len(data) > DATASET_MAX_SIZE_BYTES:
        raise ApiError.message(413, "EntityTooLarge: the chunk exceeds the dataset size limit.")
    if owner is None or not emu.store.put_chunk(owner, upload_id, file, chunk, data):
        raise ApiError.message(404, "NoSuchUpload: the upload no longer exists.")
    return Response(status_code=200)


@router.post("/tabpfn/fit")
def fit(req: FitRequest, emu: EmuDep, account: FitAccountDep) -> JSONResponse:
    # Forced async mimics the cloud answering a sync fit with "pending" under load.
    model = _start_fit(emu, account, req, background=emu.config.force_async)
    now = time.time()
    return _json(
        FitResponse(
            fitted_train_set_id=model.id,
            status=jobs.fit_status(model, now),
            timings=jobs.fit_timings(model, now),
        )
    )


@router.post("/tabpfn/submit_fit_job")
def submit_fit_job(req: SubmitFitJobRequest, emu: EmuDep, account: FitAccountDep) -> JSONResponse:
    model = _start_fit(emu, account, req, background=True)
    return _json(SubmitFitJobResponse(fitted_train_set_id=model.id))


@router.post("/tabpfn/get_fit_status")
async def get_fit_status(
    req: GetFitStatusRequest, emu: EmuDep, account: AccountDep
) -> JSONResponse:
    model = _fitted_model(emu, account, req.fitted_train_set_id)
    now = time.time()
    status = jobs.fit_status(model, now)
    retry = None
    if status == FitStatus.PENDING:
        retry = min(max(model.ready_at - now, 0.1), 1.0) if model.done.is_set() else 0.5
    failed = status == FitStatus.FAILED
    return _json(
        GetFitStatusResponse(
            fitted_train_set_id=model.id,
            status=status,
            retry_in_secs=retry,
            error=model.error if failed else None,
            error_code="FIT_FAILED" if failed else None,
            timings=jobs.fit_timings(model, now),
        )
    )


@router.post("/tabpfn/prepare_test_set_upload")
async def prepare_test_set_upload(
    req: PrepareTestSetUploadRequest, request: Request, emu: EmuDep, account: UploadAccountDep
) -> JSONResponse:
    _fitted_model(emu, account, req.fitted_train_set_id)
    _check_file_info("x_test", req.x_test_info)
    x_hash = req.x_test_info.hash
    dedup_key = ("test", x_hash) if x_hash else None
    if dedup_key and not req.force_reupload:
        duplicate = emu.store.find_duplicate(account, dedup_key)
        if duplicate is not None:
            body = DuplicateTestSetErrorResponse(
                message="This test set was already uploaded.", test_set_upload_id=duplicate.id
            )
            return _json(body, status_code=409)
    n_chunks = _n_chunks(req.x_test_info, emu.config.upload_chunk_bytes)
    upload = emu.store.create_upload(account, "test", {"x_test": (x_hash, n_chunks)}, dedup_key)
    return _json(
        PrepareTestSetUploadResponse(
            test_set_upload_id=upload.id,
            x_test_info=_upload_info(request, emu, account, upload, "x_test"),
        )
    )


@router.post("/tabpfn/predict")
def predict(req: PredictRequest, emu: EmuDep, account: PredictAccountDep) -> JSONResponse:
    model = _fitted_model(emu, account, req.fitted_train_set_id)
    status = jobs.fit_status(model, time.time())
    if status == FitStatus.PENDING:
        raise ApiError.message(409, f"Fit {model.id} is still pending; poll get_fit_status.")
    if status == FitStatus.FAILED:
        raise ApiError.message(400, f"Fit {model.id} failed: {model.error}")
    task_config = req.task_config
    is_classifier = isinstance(task_config, ClassifierConfig)
    if (model.task == "classification") != is_classifier:
        raise ApiError.message(
            400, f"The model was fitted for {model.task}, not {task_config.task.value}."
        )
    upload = _complete_upload(emu, account, req.test_set_upload_id, "test")
    limit = emu.config.usage_limit
    allowed, usage, reset_time = emu.store.consume_predict(account, limit)
    if not allowed:
        raise ApiError.message(
            429,
            f"Daily usage limit of {limit} predict calls reached; "
            f"it resets at {reset_time.isoformat()}.",
            error_code="USAGE_LIMIT_EXCEEDED",
            current_usage=usage,
            usage_limit=limit,
            reset_time=reset_time.isoformat(),
        )
    x_test = upload.files["x_test"].data()
    if emu.config.token_pools:
        _charge_tokens(emu, account, model, x_test, task_config)
    try:
        response = jobs.predict(model.standin, x_test, task_config, model_limit(emu.config))
    except StandInError as exc:
        raise ApiError.message(400, str(exc)) from exc
    return _json(response)


def _charge_tokens(
    emu: Emulator,
    account: Account,
    model: FittedModel,
    x_test: bytes,
    task_config: ClassifierConfig | RegressorConfig,
) -> None:
    """Take the call's tokens from the account's pools, or refuse it with a 429."""
    try:
        test_rows, cols = parquet_shape(x_test)
    except StandInError as exc:
        raise ApiError.message(400, str(exc)) from exc
    train_rows = model.train_shape[0] if model.train_shape else 0
    tabpfn_config = task_config.tabpfn_config
    cost = predict_cost(
        train_rows, test_rows, cols, tabpfn_config.n_estimators if tabpfn_config else None
    )
    config = emu.config
    empty = emu.pools.charge(
        account.name, cost, config.daily_tokens, config.monthly_tokens, datetime.now(UTC)
    )
    if empty is not None:
        raise _pool_empty(empty)


def _pool_empty(empty: PoolEmpty) -> ApiError:
    # No Retry-After: the wait is hours or weeks, not a window, and the message
    # names the pool and its reset time, as the cloud's does.
    return ApiError.message(
        429,
        empty.message,
        error_code="TOKEN_POOL_EXHAUSTED",
        pool=empty.pool,
        limit=empty.limit,
        used=empty.used,
        cost=empty.cost,
        reset_time=empty.reset_at.isoformat(),
    )


@router.post("/get_api_usage/")
def get_api_usage(emu: EmuDep, account: AccountDep) -> dict[str, Any]:
    usage, reset_time = emu.store.usage(account)
    body: dict[str, Any] = {
        "current_usage": usage,
        "usage_limit": emu.config.usage_limit,
        "reset_time": reset_time.isoformat(),
    }
    if emu.config.token_pools:
        body["token_pools"] = emu.pools.usage(
            account.name, emu.config.daily_tokens, emu.config.monthly_tokens, datetime.now(UTC)
        )
    return body


@router.post("/tabpfn/estimate_cost")
def estimate_cost(req: EstimateCostRequest, account: AccountDep) -> JSONResponse:
    inputs = req.model_copy(
        update={
            "test_rows": req.test_rows or 0,
            "model_version": req.model_version or DEFAULT_MODEL_VERSION,
            "operation": req.operation or QuotaOperation.PREDICT,
            "n_estimators": req.n_estimators or 8,
        }
    )
    # Cells predicted times ensemble size: roughly how the legacy credits scale.
    cost = (inputs.train_rows + inputs.test_rows) * inputs.raw_columns * inputs.n_estimators
    return _json(
        EstimateCostResponse(estimated_cost=cost, pricing_version="emulator", inputs=inputs)
    )


@router.delete("/delete_dataset/")
def delete_dataset(dataset_uid: UUID, emu: EmuDep, account: AccountDep) -> dict[str, list[str]]:
    """What `UserDataClient.delete_dataset` calls: a user deleting data in their account."""
    deleted = emu.store.delete_dataset(account, dataset_uid)
    if not deleted:
        raise _not_found(f"No dataset {dataset_uid} in this account.")
    return {"deleted_dataset_uids": [str(uid) for uid in deleted]}


@router.get("/_emulator/calls")
def emulator_calls(emu: EmuDep) -> list[dict[str, Any]]:
    return emu.calls.entries()


@router.get("/_emulator/stats")
def emulator_stats(emu: EmuDep) -> dict[str, Any]:
    """The emulator process's CPU seconds and its calls by kind, for benchmarks."""
    return {**emu.stats.snapshot(), "model": emu.config.model}


@router.get("/_emulator/config")
def emulator_config(emu: EmuDep) -> dict[str, Any]:
    return emu.config.model_dump(exclude={"tokens", "revoked_tokens"})


@router.patch("/_emulator/config")
def patch_emulator_config(changes: dict[str, Any], emu: EmuDep) -> dict[str, Any]:
    """Change knobs while running, so one emulator serves a whole test session.

    Accepted tokens are fixed at start (they define the accounts); everything
    else, revoked tokens included, may change.
    """
    if "tokens" in changes:
        raise ApiError.message(422, "tokens are fixed at start; set EMULATOR_TOKENS.")
    try:
        emu.config = EmulatorConfig.model_validate({**emu.config.model_dump(), **changes})
    except ValidationError as exc:
        raise ApiError.message(422, f"Invalid emulator config: {exc.errors()[0]['msg']}") from exc
    return emulator_config(emu)


@router.post("/_emulator/reset")
def emulator_reset(emu: EmuDep) -> dict[str, bool]:
    emu.store.reset()
    emu.calls.clear()
    emu.rate_windows.reset()
    emu.pools.reset()
    emu.stats.reset()
    return {"reset": True}


def create_app(config: EmulatorConfig | None = None) -> FastAPI:
    config = config or EmulatorConfig()
    emu = Emulator(config=config, store=AccountStore(config.tokens))
    app = FastAPI(
        title="TabPFN cloud emulator",
        description=f"Speaks the TabPFN cloud protocol; predictions come from {STANDIN_LABEL}.",
    )
    app.state.emulator = emu
    install_error_handlers(app)
    app.include_router(router)

    app.add_middleware(RecordCalls, emu=emu)
    return app


async def _hang(emu: Emulator) -> None:
    """Stall for EMULATOR_HANG_S from the call's start, as the knob reads now.

    Lowering the knob (PATCH /_emulator/config) shortens calls that hang already,
    and 0 releases them: a test that hung the upstream ends its hang when it is
    done. With a plain sleep, a call hung for minutes held the emulator's
    shutdown that long (uvicorn waits for running requests), and then its stop
    timed out.
    """
    started = time.monotonic()
    while (left := started + emu.config.hang_s - time.monotonic()) > 0:
        await asyncio.sleep(min(left, _HANG_CHECK_S))


class RecordCalls:
    """Delay each upstream call (EMULATOR_LATENCY_S, EMULATOR_HANG_S), then log it.

    A pure ASGI middleware: Starlette's `@app.middleware("http")` wraps every
    response in a stream of its own, which cost more CPU than the routes did.
    """

    def __init__(self, app: ASGIApp, emu: Emulator) -> None:
        self.app = app
        self.emu = emu

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/_emulator/"):
            await self.app(scope, receive, send)
            return
        emu = self.emu
        is_upload = path.startswith(STORAGE_PREFIX)
        if emu.config.latency_s and not is_upload:
            await asyncio.sleep(emu.config.latency_s)
        if emu.config.hang_s and path in HANGING_PATHS:
            await _hang(emu)
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:  # a call that raised is recorded too, as the 500 the client got
            self._record(scope, path, is_upload, status)

    def _record(self, scope: Scope, path: str, is_upload: bool, status: int) -> None:
        token = _bearer(Request(scope))
        entry: dict[str, Any] = {"method": scope["method"], "path": path, "status": status}
        if is_upload:
            entry["account"] = scope.get("state", {}).get("upload_account")
            entry["auth_account"] = account_name(token) if token else None
        else:
            account = self.emu.store.authenticate(token)
            entry["account"] = account.name if account else None
        self.emu.calls.append(entry)
        self.emu.stats.count(path_kind(path, STORAGE_PREFIX), status)


def serve(host: str = "127.0.0.1", port: int = 8080) -> None:
    # No access log: GET /_emulator/calls records every call, and a log line per
    # call was a tenth of the emulator's CPU.
    uvicorn.run(create_app(), host=host, port=port, access_log=False)
