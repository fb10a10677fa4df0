//! The mails in English, the default. Tests elsewhere match some of these
//! phrases: change them together.

use super::Catalogue;

pub const EN: Catalogue = Catalogue {
    notice_body: "Hello {name},\r\n\r\n{what}\r\n\r\nAccount: {username}\r\n{stamp}\r\n\r\n\
        If this was you, there is nothing to do.\r\n\r\n\
        If it was not you, someone may know your password or have your codes:\r\n\
        1. Sign in with your passkey at {origin}/ (a passkey cannot be phished).\r\n\
        2. Open \"Sign-in options\" ({origin}/security.html) and change your password; \
        remove and set up again your authenticator app.\r\n\
        3. Ask your administrator to reset your devices if a passkey you do not know \
        was added, or if you cannot sign in.\r\n",
    stamp: "When: {when} (UTC)\r\nFrom: {from}",
    from_ip_and_agent: "{ip} (its browser calls itself \"{agent}\")",
    from_agent: "a browser that calls itself \"{agent}\"",
    from_server_tools: "this server's own tools",
    roles_none: "none",
    subject_password_set: "A password was set on your account",
    what_password_set: "A password was set for signing in without your passkey.",
    subject_password_changed: "Your password was changed",
    what_password_changed: "Your password was changed, and your other sessions were ended.",
    subject_passkey_bound: "A new passkey was added to your account",
    what_passkey_bound: "A new passkey, \"{name}\", was added to your account.",
    what_passkey_bound_delayed: "A new passkey, \"{name}\", was added to your account after a \
        sign-in with a password. It can sign in now, but can approve payments only from {from} \
        (UTC).",
    subject_passkey_unbound: "A passkey was removed from your account",
    what_passkey_unbound: "The passkey \"{name}\" was removed from your account.",
    what_passkey_unbound_by_admin: "An administrator removed the passkey \"{name}\" from your \
        account.",
    subject_totp_added: "An authenticator app was set up on your account",
    what_totp_added: "An authenticator app (TOTP) was set up as a second factor.",
    subject_totp_removed: "The authenticator app was removed from your account",
    what_totp_removed: "The authenticator app (TOTP) and its recovery codes were removed.",
    subject_recovery_codes_made: "New recovery codes were made for your account",
    what_recovery_codes_made: "A new set of recovery codes was made; the old codes no longer \
        work.",
    subject_passkey_recovered: "A recovery code was used to add a passkey",
    what_passkey_recovered: "One of your passkey recovery codes was used to add a new passkey, \
        \"{name}\", to your account. It can sign in now, but can approve payments only from \
        {from} (UTC). If this was not you, remove it and make new recovery codes at once.",
    what_passkey_recovered_by_mail: "The code from an account recovery by email was used to \
        add a new passkey, \"{name}\", to your account. It can sign in now, but can approve \
        payments only from {from} (UTC). If this was not you, remove it at once and change \
        your mailbox's password: someone may be reading it.",
    subject_passkey_recovery_codes_made: "New passkey recovery codes were made for your account",
    what_passkey_recovery_codes_made: "A new set of passkey recovery codes was made; the old \
        ones no longer work. Each can add a new passkey when you have lost all of yours.",
    subject_recovery_cancelled: "The account recovery was cancelled",
    what_recovery_cancelled_by_link: "The account recovery requested by email was cancelled \
        with the link from its mail; its code no longer works.",
    what_recovery_cancelled_by_passkey: "The account recovery requested by email was cancelled \
        because one of your passkeys signed in after the request; its code no longer works.",
    subject_email_change_requested: "A change of your email address was requested",
    what_email_change_requested: "Someone asked to change your account's email address to \
        {address}. This address keeps working until the new one is confirmed.",
    subject_email_changed: "Your email address was changed",
    what_email_changed: "Your account's email address was changed to {address}. Mail about \
        your account now goes there.",
    subject_locked: "Your account was locked by an administrator",
    what_locked: "An administrator locked your account and ended every session.",
    subject_unlocked: "Your account was unlocked by an administrator",
    what_unlocked: "An administrator unlocked your account.",
    subject_roles_changed: "The roles of your account were changed",
    what_roles_changed: "The roles of your account are now: {roles}.",
    subject_devices_reset: "The passkeys of your account were reset",
    what_devices_reset: "The server's operator unbound every passkey of your account and ended \
        every session. They were given a one-time code, valid for 24 hours, with which a new \
        passkey can be bound.",
    subject_browser_trusted: "A browser was marked trusted on your account",
    what_browser_trusted: "A browser ({label}) was marked trusted after a passkey sign-in, until \
        {until} (UTC). Sign-ins and payments from it are treated as less risky. If this was not \
        you, remove it under \"Trusted browsers\" on the security page.",
    subject_sign_in_code: "Your sign-in code",
    sign_in_code_body: "Hello {name},\r\n\r\nYour code to sign in is {code}\r\n\r\n\
        It works once, for {minutes} minutes. If you did not ask for it, someone may know your \
        password: change it.\r\n",
    subject_verify_email_code: "Confirm your email address",
    verify_email_code_body: "Hello {name},\r\n\r\nYour code to confirm this address is {code}\
        \r\n\r\nIt works once, for {minutes} minutes. If you did not ask for it, someone may \
        know your password: change it.\r\n",
    subject_enrolment_code: "Bind a new device",
    enrolment_code_body: "Hello {name},\r\n\r\nThe passkeys of your account {username} were \
        unbound by an administrator. To bind a new device, open the sign-in page, choose \
        \"I have an enrolment code\" and enter:\r\n\r\n    {code}\r\n\r\nIt works once, for 24 \
        hours. Every session of the account was ended.\r\n\r\n{stamp}\r\n\r\nIf you did not \
        ask for this, do not use the code: tell your administrator at once.\r\n",
    subject_recovery_requested: "Account recovery requested",
    recovery_requested_body: "Hello {name},\r\n\r\nSomeone asked to recover the account \
        {username} by email: to add a new passkey without signing in.\r\n{stamp}\r\n\r\n\
        If this was you: from {from} (UTC), open {origin}/enrol.html, choose \"I have an \
        enrolment or recovery code\" and enter\r\n\r\n    {code}\r\n\r\n\
        It works once, until {until} (UTC). The wait gives you time to stop someone who got \
        into this mailbox.\r\n\r\n\
        If this was not you, cancel it now:\r\n    {origin}/enrol.html#cancel={cancel}\r\n\
        Signing in with one of your passkeys cancels it too. Then change this mailbox's \
        password: someone may be reading it.\r\n",
};
