/**
 * moto_server with two fixes that make it judge requests as AWS does; the
 * policy evaluation itself is moto's own.
 *
 * 1. It verified signatures over the URL after Werkzeug 3 decoded %2F and
 *    %3A in it (`uri_to_iri`), so any request with '/' or ':' in its query
 *    (every listing of a tablesnap prefix) or ':' in its key failed
 *    SignatureDoesNotMatch, even from the AWS SDK: checked over the request
 *    line as sent instead.
 * 2. It authorized a DeleteObjects as s3:DeleteObject on the bucket's ARN,
 *    which no policy scoped to keys allows: authorized per key instead, as
 *    s3:DeleteObject on the key's ARN, or s3:DeleteObjectVersion when a
 *    version is named (any key refused refuses the request: each key then
 *    comes back AccessDenied in `Errors`, as AWS reports refused keys).
 */
export const MOTO_AS_SENT = `
import sys, threading
from moto.iam import access_control
from moto.moto_server import werkzeug_app
from moto.server import main
sent = threading.local()
dispatch = werkzeug_app.DomainDispatcherApplication.__call__
def remember(self, environ, start_response):
    sent.uri = environ.get("RAW_URI")
    return dispatch(self, environ, start_response)
werkzeug_app.DomainDispatcherApplication.__call__ = remember
init = access_control.IAMRequestBase.__init__
def as_sent(self, *args, **kwargs):
    if getattr(sent, "uri", None):
        kwargs["path"] = sent.uri
    init(self, *args, **kwargs)
access_control.IAMRequestBase.__init__ = as_sent
import xmltodict
from moto.s3 import responses as s3_responses
authorize = s3_responses.S3Response._authenticate_and_authorize_s3_action
def per_key(self, bucket_name=None, key_name=None):
    if key_name is None and self.data.get("Action") == "DeleteObject" and self.is_delete_keys():
        objects = xmltodict.parse(self.body)["Delete"].get("Object", [])
        for o in objects if isinstance(objects, list) else [objects]:
            self.data["Action"] = "DeleteObjectVersion" if o.get("VersionId") else "DeleteObject"
            authorize(self, bucket_name=bucket_name, key_name=o["Key"])
        self.data["Action"] = "DeleteObject"
        return
    authorize(self, bucket_name=bucket_name, key_name=key_name)
s3_responses.S3Response._authenticate_and_authorize_s3_action = per_key
main(sys.argv[1:])
`;
