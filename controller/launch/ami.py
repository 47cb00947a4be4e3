"""Instance type facts and the AMI: Amazon Linux 2023 (or its NVIDIA GPU sibling) from SSM.

Reads only (DescribeInstanceTypes, ssm:GetParameter, DescribeImages): safe under --dry-run.
The architecture comes from what DescribeInstanceTypes reports, never from a family list.
"""

from __future__ import annotations

from typing import Any

from controller.launch.plan import ImageFacts, InstanceTypeFacts
from spored.errors import ValidationError, aws_error_code, from_aws

AL2023_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
# AWS Deep Learning Base OSS Nvidia Driver GPU AMI (Amazon Linux 2023), per architecture.
GPU_PARAMETER = ("/aws/service/deeplearning/ami/{arch}/"
                 "base-oss-nvidia-driver-gpu-amazon-linux-2023/latest/ami-id")
SUPPORTED_ARCHITECTURES = ("x86_64", "arm64")


def type_facts_from(description: dict[str, Any]) -> InstanceTypeFacts:
    """Pure: one DescribeInstanceTypes entry -> the facts the plan needs."""
    archs = description.get("ProcessorInfo", {}).get("SupportedArchitectures", [])
    arch = next((a for a in SUPPORTED_ARCHITECTURES if a in archs), None)
    name = description["InstanceType"]
    if arch is None:
        raise ValidationError("--instance-type", f"{name} supports {', '.join(archs) or 'no'} "
                              "architectures; accepted: a type supporting x86_64 or arm64")
    return InstanceTypeFacts(
        instance_type=name,
        architecture=arch,
        memory_mib=int(description.get("MemoryInfo", {}).get("SizeInMiB", 0)),
        vcpus=int(description.get("VCpuInfo", {}).get("DefaultVCpus", 0)),
        hibernation_supported=bool(description.get("HibernationSupported", False)),
        gpu=bool(description.get("GpuInfo", {}).get("Gpus")),
        spot_supported="spot" in description.get("SupportedUsageClasses", ["spot"]),
    )


def ssm_parameter(facts: InstanceTypeFacts) -> str:
    """Pure: the public SSM parameter naming the default AMI for this type."""
    template = GPU_PARAMETER if facts.gpu else AL2023_PARAMETER
    return template.format(arch=facts.architecture)


def describe_type(ec2: Any, instance_type: str) -> InstanceTypeFacts:
    try:
        resp = ec2.describe_instance_types(InstanceTypes=[instance_type])
    except Exception as exc:
        if aws_error_code(exc) in {"InvalidInstanceType", "InvalidParameterValue"}:
            raise ValidationError("--instance-type", f"{instance_type!r} is not an instance type "
                                  "offered in this region (DescribeInstanceTypes); "
                                  "accepted: e.g. t3.micro, m7g.large") from None
        raise from_aws(exc, action="describing the instance type") from exc
    found = resp.get("InstanceTypes", [])
    if not found:
        raise ValidationError("--instance-type", f"{instance_type!r} is not offered in this region")
    return type_facts_from(found[0])


def image_facts_from(image: dict[str, Any]) -> ImageFacts:
    root = image.get("RootDeviceName", "/dev/xvda")
    size = 8
    for mapping in image.get("BlockDeviceMappings", []):
        if mapping.get("DeviceName") == root and "Ebs" in mapping:
            size = int(mapping["Ebs"].get("VolumeSize", size))
    return ImageFacts(image_id=image["ImageId"], root_device_name=root, root_volume_gib=size,
                      description=str(image.get("Name") or image.get("Description") or ""))


def resolve_image(ec2: Any, ssm: Any, facts: InstanceTypeFacts, ami: str | None) -> ImageFacts:
    """The AMI given with --ami (checked against the type's architecture), else the SSM default."""
    if ami is None:
        parameter = ssm_parameter(facts)
        try:
            ami = str(ssm.get_parameter(Name=parameter)["Parameter"]["Value"])
        except Exception as exc:
            if aws_error_code(exc) == "ParameterNotFound":
                raise ValidationError("--ami", f"no default AMI in this region ({parameter} not "
                                      "found); accepted: pass --ami ami-...") from None
            raise from_aws(exc, action=f"reading {parameter}") from exc
    try:
        images = ec2.describe_images(ImageIds=[ami]).get("Images", [])
    except Exception as exc:
        if aws_error_code(exc).startswith("InvalidAMIID"):
            images = []
        else:
            raise from_aws(exc, action=f"describing {ami}") from exc
    if not images:
        raise ValidationError("--ami", f"{ami} was not found in this region")
    image = images[0]
    if image.get("Architecture") not in (None, facts.architecture):
        raise ValidationError("--ami", f"{ami} is {image.get('Architecture')} but "
                              f"{facts.instance_type} is {facts.architecture}; accepted: an AMI "
                              "of the type's architecture")
    return image_facts_from(image)


def login_user(image_description: str) -> str:
    """Pure: the default SSH user of well-known AMIs, from the image's name/description."""
    text = image_description.lower()
    for needle, user in (("ubuntu", "ubuntu"), ("debian", "admin"), ("centos", "centos"),
                         ("fedora", "fedora"), ("rocky", "rocky"), ("suse", "ec2-user"),
                         ("bitnami", "bitnami")):
        if needle in text:
            return user
    return "ec2-user"  # Amazon Linux 2023, its GPU AMI, RHEL
