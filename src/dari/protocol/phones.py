"""Phone numbers for contact discovery: one canonical form, so `010-1234-5678` typed in Korea and
`+82 10-1234-5678` typed anywhere are the same number, and one keyed hash of it.

The SDK hashes on the device; the server hashes for browsers (which cannot run phonenumbers). Both
call `phone_hash` here, so the two always agree.
"""

from __future__ import annotations

import hashlib
import hmac

import phonenumbers

from dari.protocol.errors import DariError, ErrorCode

MAX_PHONE_CHARS = 64


def check_region(region: str) -> str:
    region = region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise DariError(ErrorCode.INVALID_PARAMS, f"unknown region {region!r}: give a two-letter country code"
                        " such as KR, JP, CN or US")
    return region


def normalize(phone: str, region: str) -> str:
    """The number in E.164 (+821012345678), read as a number of `region` unless it starts with +."""
    region = check_region(region)
    if len(phone) > MAX_PHONE_CHARS:
        raise DariError(ErrorCode.INVALID_PARAMS, f"a phone number is at most {MAX_PHONE_CHARS} characters")
    try:
        parsed = phonenumbers.parse(phone, region)
    except phonenumbers.NumberParseException:
        raise DariError(ErrorCode.INVALID_PARAMS, f"{phone!r} is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        raise DariError(ErrorCode.INVALID_PARAMS, f"{phone!r} is not a valid phone number in region {region}"
                        " (give it with its +country code if it is from elsewhere)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def phone_hash(contact_key: str, phone: str, region: str) -> str:
    """Keyed hash of the number's E.164 digits (without the +). Hashing the digits keeps the hashes
    stored before numbers were normalized valid for numbers that were typed with their country code."""
    digits = normalize(phone, region).lstrip("+")
    return hmac.new(bytes.fromhex(contact_key), digits.encode(), hashlib.sha256).hexdigest()
