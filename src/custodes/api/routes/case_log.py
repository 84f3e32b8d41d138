"""A case's use log over HTTP (custodes.privacy.case_log): each face search with its start and
end, the reference database and input, every result and who verified it; the authorisation
the case rests on. Reading needs what reading the case needs; a verdict is given by the case's
own people or an approver; the authorisation is recorded by an approver who does not work
the case. Every rule and its refusal (audited) is the library's."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from custodes.api.deps import get_node, require
from custodes.api.routes.cases import CaseId, Time, answers
from custodes.auth.roles import Actor, Permission
from custodes.privacy.case_log import CaseLog, LogError, Verdict, log_json

router = APIRouter(prefix="/api/cases", tags=["cases"])

Viewer = Annotated[Actor, Depends(require(Permission.CASE_VIEW))]
Approver = Annotated[Actor, Depends(require(Permission.CASE_APPROVE))]
UseId = Annotated[int, PathParam(ge=1, le=2**62)]
Rank = Annotated[int, PathParam(ge=1, le=10_000)]


class Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verdict: Verdict
    note: str = Field("", max_length=2000)


class AuthorisationBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reference: str = Field(min_length=1, max_length=200,
                           description="The authority's decision: court order, decision number")
    authorised_at: Time = Field(description="When the authority authorised the use")


def _log(request: Request) -> CaseLog:
    node = get_node(request)
    return CaseLog(node.store, node.audit, node.cases)


@router.get("/{case_id}/log")
def case_use_log(request: Request, actor: Viewer, case_id: CaseId) -> dict[str, Any]:
    """The case's use log: authorisation, uses, results and their verifications."""
    log = _log(request)
    with answers():
        return log_json(log.uses(actor, case_id), log.authorisation(actor, case_id))


@router.post("/{case_id}/uses/{use_id}/results/{rank}/verify")
def verify(request: Request, actor: Viewer, *, case_id: CaseId, use_id: UseId, rank: Rank,
           body: Verification) -> dict[str, Any]:
    """Record the caller's verdict on one result (once per person and result)."""
    with answers():
        try:
            result = _log(request).verify(actor, case_id, use_id=use_id, rank=rank,
                                          verdict=body.verdict, note=body.note)
        except LogError as exc:  # a ValueError, but a thing that does not exist: 404
            raise HTTPException(404, str(exc)) from None
    return {"rank": result.rank, "confirmed": result.confirmed,
            "verifications": [{"verified_by": v.verified_by, "verdict": v.verdict.value}
                              for v in result.verifications]}


@router.post("/{case_id}/authorisation", status_code=201)
def authorise(request: Request, actor: Approver, case_id: CaseId,
              body: AuthorisationBody) -> dict[str, Any]:
    """Record the reference and time of the authorisation the case rests on (once)."""
    with answers():
        done = _log(request).authorise(actor, case_id, reference=body.reference,
                                       authorised_at=body.authorised_at)
    return {"reference": done.reference, "authorised_at": done.authorised_at,
            "recorded_by": done.recorded_by, "recorded_at": done.recorded_at}
