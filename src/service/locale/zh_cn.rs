//! The mails in Simplified Chinese. Terms, kept the same everywhere (and
//! on the pages): passkey 通行密钥, authenticator app 验证器应用, recovery
//! code 恢复码, passkey recovery code 通行密钥恢复码, enrolment code 登记码,
//! session 会话, sign in 登录, "Sign-in options" 登录选项.

use super::Catalogue;

pub const ZH_CN: Catalogue = Catalogue {
    notice_body: "{name}，您好：\r\n\r\n{what}\r\n\r\n账户：{username}\r\n{stamp}\r\n\r\n\
        如果这是您本人的操作，无需做任何事。\r\n\r\n\
        如果不是您本人的操作，可能有人知道了您的密码或拿到了您的验证码：\r\n\
        1. 在 {origin}/ 用您的通行密钥登录（通行密钥无法被钓鱼窃取）。\r\n\
        2. 打开“登录选项”（{origin}/security.html），修改密码，并移除后重新设置验证器应用。\r\n\
        3. 如果账户中添加了您不认识的通行密钥，或者您无法登录，请联系管理员重置您的设备。\r\n",
    stamp: "时间：{when}（UTC）\r\n来源：{from}",
    from_ip_and_agent: "{ip}（其浏览器自称“{agent}”）",
    from_agent: "一个自称“{agent}”的浏览器",
    from_server_tools: "本服务器自身的管理工具",
    roles_none: "无",
    subject_password_set: "您的账户设置了密码",
    what_password_set: "您的账户设置了密码，可用于不使用通行密钥时登录。",
    subject_password_changed: "您的密码已修改",
    what_password_changed: "您的密码已修改，您的其他会话均已结束。",
    subject_passkey_bound: "您的账户添加了新的通行密钥",
    what_passkey_bound: "您的账户添加了新的通行密钥“{name}”。",
    what_passkey_bound_delayed: "在一次密码登录后，您的账户添加了新的通行密钥“{name}”。\
        它现在即可用于登录，但要到 {from}（UTC）起才能批准付款。",
    subject_passkey_unbound: "您的账户移除了一个通行密钥",
    what_passkey_unbound: "通行密钥“{name}”已从您的账户中移除。",
    what_passkey_unbound_by_admin: "管理员从您的账户中移除了通行密钥“{name}”。",
    subject_totp_added: "您的账户设置了验证器应用",
    what_totp_added: "您的账户设置了验证器应用（TOTP）作为第二重验证。",
    subject_totp_removed: "您的账户移除了验证器应用",
    what_totp_removed: "验证器应用（TOTP）及其恢复码已被移除。",
    subject_recovery_codes_made: "您的账户生成了新的恢复码",
    what_recovery_codes_made: "已生成一组新的恢复码，旧的恢复码已全部失效。",
    subject_passkey_recovered: "有人使用恢复码添加了通行密钥",
    what_passkey_recovered: "有人使用您的一个通行密钥恢复码，为您的账户添加了新的通行密钥\
        “{name}”。它现在即可用于登录，但要到 {from}（UTC）起才能批准付款。\
        如果这不是您本人的操作，请立即移除它，并重新生成恢复码。",
    what_passkey_recovered_by_mail: "有人使用通过邮件申请的账户恢复中的登记码，为您的账户添加了\
        新的通行密钥“{name}”。它现在即可用于登录，但要到 {from}（UTC）起才能批准付款。\
        如果这不是您本人的操作，请立即移除它，并修改您邮箱的密码：可能有人正在读取您的邮件。",
    subject_passkey_recovery_codes_made: "您的账户生成了新的通行密钥恢复码",
    what_passkey_recovery_codes_made: "已生成一组新的通行密钥恢复码，旧的已全部失效。\
        当您丢失了所有通行密钥时，每个恢复码都可以用来添加一个新的通行密钥。",
    subject_recovery_cancelled: "账户恢复已取消",
    what_recovery_cancelled_by_link: "通过邮件申请的账户恢复已经用邮件中的链接取消，\
        其中的登记码已失效。",
    what_recovery_cancelled_by_passkey: "通过邮件申请的账户恢复已取消，因为申请之后您用\
        自己的一个通行密钥登录过，其中的登记码已失效。",
    subject_email_change_requested: "有人申请修改您的邮箱地址",
    what_email_change_requested: "有人申请将您账户的邮箱地址改为 {address}。\
        在新地址确认之前，本地址仍然有效。",
    subject_email_changed: "您的邮箱地址已修改",
    what_email_changed: "您账户的邮箱地址已改为 {address}，今后与账户有关的邮件都将发往该地址。",
    subject_locked: "您的账户已被管理员锁定",
    what_locked: "管理员锁定了您的账户，并结束了所有会话。",
    subject_unlocked: "您的账户已被管理员解锁",
    what_unlocked: "管理员解锁了您的账户。",
    subject_roles_changed: "您账户的角色已变更",
    what_roles_changed: "您账户现在的角色是：{roles}。",
    subject_devices_reset: "您账户的通行密钥已被重置",
    what_devices_reset: "服务器运维人员解除了您账户的所有通行密钥，并结束了所有会话。\
        他们拿到了一个 24 小时内有效的一次性登记码，可用它绑定新的通行密钥。",
    subject_browser_trusted: "您的账户有一个浏览器被标记为受信任",
    what_browser_trusted: "在一次通行密钥登录之后，一个浏览器（{label}）被标记为受信任，\
        有效期至 {until}（UTC）。来自它的登录和支付会被视为风险较低。如果这不是您本人的操作，\
        请在安全设置页面的“受信任的浏览器”中将其移除。",
    subject_sign_in_code: "您的登录验证码",
    sign_in_code_body: "{name}，您好：\r\n\r\n您的登录验证码是：{code}\r\n\r\n\
        该验证码只能使用一次，{minutes} 分钟内有效。如果您没有申请过验证码，\
        可能有人知道了您的密码，请修改密码。\r\n",
    subject_verify_email_code: "请确认您的邮箱地址",
    verify_email_code_body: "{name}，您好：\r\n\r\n确认此邮箱地址的验证码是：{code}\r\n\r\n\
        该验证码只能使用一次，{minutes} 分钟内有效。如果您没有申请过验证码，\
        可能有人知道了您的密码，请修改密码。\r\n",
    subject_enrolment_code: "绑定新设备",
    enrolment_code_body: "{name}，您好：\r\n\r\n管理员解除了您的账户 {username} 的所有通行密钥。\
        如需绑定新设备，请打开登录页面，选择“我有登记码”，然后输入：\r\n\r\n    {code}\r\n\r\n\
        该登记码只能使用一次，24 小时内有效。该账户的所有会话均已结束。\r\n\r\n{stamp}\r\n\r\n\
        如果这不是您申请的，请不要使用该登记码，并立即告知管理员。\r\n",
    subject_recovery_requested: "有人申请恢复您的账户",
    recovery_requested_body: "{name}，您好：\r\n\r\n有人申请通过邮件恢复账户 {username}，\
        即不登录而添加新的通行密钥。\r\n{stamp}\r\n\r\n\
        如果这是您本人的申请：请从 {from}（UTC）起打开 {origin}/enrol.html，\
        选择“我有登记码或恢复码”，然后输入\r\n\r\n    {code}\r\n\r\n\
        该登记码只能使用一次，有效期至 {until}（UTC）。这段等待时间让您来得及阻止\
        进入了此邮箱的他人。\r\n\r\n\
        如果这不是您本人的申请，请立即取消：\r\n    {origin}/enrol.html#cancel={cancel}\r\n\
        用您的任一通行密钥登录也会取消此申请。然后请修改此邮箱的密码：可能有人正在查看它。\r\n",
};
