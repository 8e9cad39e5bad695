"""Starts moto's server (a real implementation of the ACM PCA API) on 127.0.0.1:0, makes a
root CA in it the way one does on AWS (CreateCertificateAuthority, GetCertificateAuthorityCsr,
IssueCertificate with the RootCACertificate/V1 template, ImportCertificateAuthorityCertificate),
prints one JSON line {"endpoint", "arn"} and serves until stdin closes."""
import json
import sys

import boto3
from moto.server import ThreadedMotoServer

server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
host, port = server.get_host_and_port()
endpoint = f"http://{host}:{port}"
pca = boto3.client(
    "acm-pca",
    region_name="us-east-1",
    endpoint_url=endpoint,
    aws_access_key_id="AKIDWEFTTEST",
    aws_secret_access_key="weft-test-secret",
)
arn = pca.create_certificate_authority(
    CertificateAuthorityConfiguration={
        "KeyAlgorithm": "RSA_2048",
        "SigningAlgorithm": "SHA256WITHRSA",
        "Subject": {"Organization": "weft test", "CommonName": "weft test PCA root"},
    },
    CertificateAuthorityType="ROOT",
)["CertificateAuthorityArn"]
csr = pca.get_certificate_authority_csr(CertificateAuthorityArn=arn)["Csr"]
root_arn = pca.issue_certificate(
    CertificateAuthorityArn=arn,
    Csr=csr.encode(),
    SigningAlgorithm="SHA256WITHRSA",
    TemplateArn="arn:aws:acm-pca:::template/RootCACertificate/V1",
    Validity={"Type": "YEARS", "Value": 10},
)["CertificateArn"]
root = pca.get_certificate(CertificateAuthorityArn=arn, CertificateArn=root_arn)["Certificate"]
pca.import_certificate_authority_certificate(CertificateAuthorityArn=arn, Certificate=root.encode())
print(json.dumps({"endpoint": endpoint, "arn": arn, "root": root}), flush=True)
sys.stdin.read()
server.stop()
